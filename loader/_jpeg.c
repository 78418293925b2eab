/* tagstream.loader._jpeg: the CPU decoder of the train and eval paths.
 *
 * crop_resize() decodes only the crop window of a JPEG (libjpeg-turbo's jpeg_crop_scanline and
 * jpeg_skip_scanlines: no IDCT or colour conversion outside the window, no entropy decoding below it),
 * resizes the window to size x size with Pillow's bilinear filter (antialiased when downscaling, the
 * filter of torchvision's RandomResizedCrop on PIL images) and mirrors it if asked, into a caller's
 * buffer. Both resize passes run along contiguous rows (the second on a transposed image), so the
 * compiler vectorises them. The GIL is released while it works. Errors, and libjpeg's warnings about
 * corrupt data, raise ValueError: a damaged record is never silently decoded to grey.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

#define PRECISION_BITS 22 /* Pillow's fixed-point precision for 8-bit resampling */

/* Per-thread buffers that only grow: fresh multi-100-KB mallocs are mmapped and page-faulted on every
 * call, which cost as much as the resize itself. A few MB per decoding thread at most. */
typedef struct {
    uint8_t *p;
    size_t cap;
} Scratch;

static uint8_t *scratch(Scratch *s, size_t n) {
    if (n > s->cap) {
        free(s->p);
        s->p = malloc(n);
        s->cap = s->p ? n : 0;
    }
    return s->p;
}

static _Thread_local Scratch scratch_pixels, scratch_vert, scratch_trans, scratch_horiz;

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} ErrMgr;

static void on_error(j_common_ptr cinfo) {
    ErrMgr *err = (ErrMgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->msg);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) on_error(cinfo); /* a warning means corrupt data: refuse the record */
}

/* Taps of Pillow's bilinear (triangle) filter mapping `in` pixels onto `out` pixels. */
typedef struct {
    int taps;
    int *first;     /* out: first input pixel */
    int *count;     /* out: taps used */
    int32_t *coeff; /* out x taps, fixed point */
} Taps;

static int make_taps(Taps *t, int in, int out, int antialias) {
    double scale = (double)in / out;
    double filterscale = (antialias && scale > 1.0) ? scale : 1.0;
    double support = filterscale; /* bilinear support is 1 */
    t->taps = (int)(support * 2 + 2);
    t->first = malloc(sizeof(int) * out);
    t->count = malloc(sizeof(int) * out);
    t->coeff = calloc((size_t)out * t->taps, sizeof(int32_t));
    double *k = malloc(sizeof(double) * t->taps);
    if (!t->first || !t->count || !t->coeff || !k) {
        free(k);
        return -1;
    }
    for (int o = 0; o < out; o++) {
        double center = (o + 0.5) * scale, ww = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > t->taps) hi = lo + t->taps;
        for (int i = lo; i < hi; i++) {
            double x = (i - center + 0.5) / filterscale;
            double w = x < 0 ? 1.0 + x : 1.0 - x;
            k[i - lo] = w > 0 ? w : 0.0;
            ww += k[i - lo];
        }
        t->first[o] = lo;
        t->count[o] = hi - lo;
        for (int i = 0; i < hi - lo; i++) {
            double v = ww != 0.0 ? k[i] / ww : 0.0;
            t->coeff[(size_t)o * t->taps + i] = (int32_t)(v < 0 ? v * (1 << PRECISION_BITS) - 0.5 : v * (1 << PRECISION_BITS) + 0.5);
        }
    }
    free(k);
    return 0;
}

static void free_taps(Taps *t) {
    free(t->first);
    free(t->count);
    free(t->coeff);
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : (v > 255 ? 255 : (uint8_t)v);
}

#define CHUNK 32
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default"))) /* picked at load time by the CPU */
#else
#define VECTOR_CLONES
#endif

/* dst[o][:n] = sum_k coeff[o][k] * src[first[o] + k][:n] for o < out; rows of n bytes, src rows `stride`
 * apart. CHUNK bytes at a time with the sums in registers: the compiler vectorises the inner loops. */
VECTOR_CLONES
static void resample_rows(const uint8_t *src, size_t stride, size_t n, const Taps *t, int out, uint8_t *dst) {
    for (int o = 0; o < out; o++) {
        const int32_t *c = t->coeff + (size_t)o * t->taps;
        const uint8_t *base = src + (size_t)t->first[o] * stride;
        uint8_t *d = dst + (size_t)o * n;
        int taps = t->count[o];
        size_t i0 = 0;
        for (; i0 + CHUNK <= n; i0 += CHUNK) {
            int32_t acc[CHUNK];
            for (int j = 0; j < CHUNK; j++) acc[j] = 1 << (PRECISION_BITS - 1);
            for (int k = 0; k < taps; k++) {
                const uint8_t *row = base + (size_t)k * stride + i0;
                int32_t w = c[k];
                for (int j = 0; j < CHUNK; j++) acc[j] += w * (int32_t)row[j];
            }
            for (int j = 0; j < CHUNK; j++) d[i0 + j] = clip8(acc[j]);
        }
        for (size_t i = i0; i < n; i++) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int k = 0; k < taps; k++) acc += c[k] * (int32_t)base[(size_t)k * stride + i];
            d[i] = clip8(acc);
        }
    }
}

/* dst (cols x rows pixels) = transpose of src (rows x cols pixels, RGB); mirror reverses dst's columns.
 * Eight source rows at a time, so each write is 24 contiguous bytes. */
static void transpose_rgb(const uint8_t *src, int rows, int cols, uint8_t *dst, int mirror) {
    for (int r0 = 0; r0 < rows; r0 += 8) {
        int nr = rows - r0 < 8 ? rows - r0 : 8;
        for (int c = 0; c < cols; c++) {
            const uint8_t *s = src + (size_t)r0 * cols * 3 + (size_t)c * 3;
            uint8_t *d = dst + (size_t)c * rows * 3;
            for (int k = 0; k < nr; k++) {
                int r = r0 + k;
                uint8_t *p = d + (size_t)(mirror ? rows - 1 - r : r) * 3;
                const uint8_t *q = s + (size_t)k * cols * 3;
                p[0] = q[0];
                p[1] = q[1];
                p[2] = q[2];
            }
        }
    }
}

/* Resize the w x h RGB window at src (rows `stride` bytes apart) to size x size into out. */
static int resize_window(const uint8_t *src, size_t stride, int w, int h, int size, int mirror, int antialias, uint8_t *out) {
    Taps tv = {0}, th = {0};
    int ok = -1;
    uint8_t *vert = scratch(&scratch_vert, (size_t)size * w * 3);   /* size rows of w pixels */
    uint8_t *trans = scratch(&scratch_trans, (size_t)w * size * 3); /* w rows of size pixels */
    uint8_t *horiz = scratch(&scratch_horiz, (size_t)size * size * 3);
    if (vert && trans && horiz && make_taps(&tv, h, size, antialias) == 0 && make_taps(&th, w, size, antialias) == 0) {
        resample_rows(src, stride, (size_t)w * 3, &tv, size, vert);
        transpose_rgb(vert, size, w, trans, 0);
        resample_rows(trans, (size_t)size * 3, (size_t)size * 3, &th, size, horiz);
        transpose_rgb(horiz, size, size, out, mirror);
        ok = 0;
    }
    free_taps(&tv);
    free_taps(&th);
    return ok;
}

/* What to decode, and where the decoded window lies. */
typedef struct {
    int x, y, w, h, whole;     /* in: the window (whole: the full image) */
    uint8_t *pixels;           /* out: rows of `stride` bytes, the window `offset` bytes into each (thread's scratch) */
    JSAMPROW *rows;
    size_t stride, offset;
    int width, height;         /* out: the image's size */
} Window;

/* The libjpeg calls of decode_window, apart from its setjmp so no local can be clobbered. */
static const char *read_window(struct jpeg_decompress_struct *cinfo, const uint8_t *data, size_t len, Window *win) {
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, data, (unsigned long)len);
    jpeg_read_header(cinfo, TRUE);
    cinfo->out_color_space = JCS_RGB;
    jpeg_start_decompress(cinfo);
    win->width = (int)cinfo->output_width;
    win->height = (int)cinfo->output_height;
    if (win->whole) {
        win->x = win->y = 0;
        win->w = win->width;
        win->h = win->height;
    }
    if (win->x < 0 || win->y < 0 || win->w < 1 || win->h < 1 || win->x + win->w > win->width || win->y + win->h > win->height)
        return "crop window outside the image";
    /* Two pixels of margin: fancy chroma upsampling replicates at the decoded region's edges, which
     * would otherwise differ (by up to ~10 levels) from a full decode in the window's edge columns. */
    int lo = win->x > 2 ? win->x - 2 : 0, hi = win->x + win->w + 2 < win->width ? win->x + win->w + 2 : win->width;
    JDIMENSION xoff = (JDIMENSION)lo, cw = (JDIMENSION)(hi - lo);
    if (lo > 0 || hi < win->width) jpeg_crop_scanline(cinfo, &xoff, &cw);
    win->stride = (size_t)cinfo->output_width * 3;
    win->offset = (size_t)(win->x - (int)xoff) * 3;
    win->pixels = scratch(&scratch_pixels, win->stride * win->h);
    win->rows = malloc(sizeof(JSAMPROW) * win->h);
    if (!win->pixels || !win->rows) return "out of memory";
    for (int r = 0; r < win->h; r++) win->rows[r] = win->pixels + (size_t)r * win->stride;
    if (win->y > 0) jpeg_skip_scanlines(cinfo, (JDIMENSION)win->y);
    int done = 0;
    while (done < win->h) done += (int)jpeg_read_scanlines(cinfo, win->rows + done, (JDIMENSION)(win->h - done));
    return NULL;
}

/* Decode win's window into this thread's scratch buffer; NULL on success, else the reason. */
static const char *decode_window(const uint8_t *data, size_t len, Window *win) {
    struct jpeg_decompress_struct cinfo;
    ErrMgr err;
    const char *volatile fail = NULL;
    win->pixels = NULL;
    win->rows = NULL;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.msg[0] = 0;
    if (setjmp(err.jump)) {
        fail = err.msg[0] ? err.msg : "unknown libjpeg error";
    } else {
        fail = read_window(&cinfo, data, len, win);
    }
    free(win->rows);
    win->rows = NULL;
    jpeg_destroy_decompress(&cinfo);
    if (fail) { /* copy: err.msg dies with this frame */
        static _Thread_local char reason[JMSG_LENGTH_MAX];
        snprintf(reason, sizeof reason, "%s", fail);
        return reason;
    }
    return NULL;
}

static PyObject *py_crop_resize(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    int x, y, w, h, size, mirror, antialias;
    if (!PyArg_ParseTuple(args, "y*iiiiw*ipp", &data, &x, &y, &w, &h, &out, &size, &mirror, &antialias)) return NULL;
    const char *fail = NULL;
    if (size < 1 || out.len != (Py_ssize_t)size * size * 3) fail = "output buffer must hold size * size * 3 bytes";
    Window win = {.x = x, .y = y, .w = w, .h = h, .whole = 0};
    Py_BEGIN_ALLOW_THREADS
    if (!fail) fail = decode_window(data.buf, (size_t)data.len, &win);
    if (!fail && resize_window(win.pixels + win.offset, win.stride, w, h, size, mirror, antialias, out.buf) != 0) fail = "out of memory";
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (fail) return PyErr_Format(PyExc_ValueError, "JPEG %s", fail);
    Py_RETURN_NONE;
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    Window win = {.whole = 1};
    const char *fail;
    Py_BEGIN_ALLOW_THREADS
    fail = decode_window(data.buf, (size_t)data.len, &win);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (fail) return PyErr_Format(PyExc_ValueError, "JPEG %s", fail);
    PyObject *buf = PyByteArray_FromStringAndSize((const char *)win.pixels, (Py_ssize_t)win.stride * win.height);
    if (!buf) return NULL;
    return Py_BuildValue("(Nii)", buf, win.width, win.height);
}

static PyObject *py_resize(PyObject *self, PyObject *args) {
    Py_buffer src, out;
    int w, h, size, mirror, antialias;
    if (!PyArg_ParseTuple(args, "y*iiw*ipp", &src, &w, &h, &out, &size, &mirror, &antialias)) return NULL;
    const char *fail = NULL;
    if (w < 1 || h < 1 || src.len != (Py_ssize_t)w * h * 3) fail = "source buffer must hold w * h * 3 bytes";
    else if (size < 1 || out.len != (Py_ssize_t)size * size * 3) fail = "output buffer must hold size * size * 3 bytes";
    Py_BEGIN_ALLOW_THREADS
    if (!fail && resize_window(src.buf, (size_t)w * 3, w, h, size, mirror, antialias, out.buf) != 0) fail = "out of memory";
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    if (fail) return PyErr_Format(PyExc_ValueError, "%s", fail);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"resize", py_resize, METH_VARARGS,
     "resize(src, w, h, out, size, mirror, antialias): the resize of crop_resize on an h x w RGB image in memory."},
    {"crop_resize", py_crop_resize, METH_VARARGS,
     "crop_resize(data, x, y, w, h, out, size, mirror, antialias): decode the window, resize it to size x size "
     "(Pillow's bilinear filter), mirror it if asked, into `out` (size*size*3 bytes, RGB). ValueError on bad data."},
    {"decode", py_decode, METH_VARARGS, "decode(data) -> (bytearray of height*width*3 RGB bytes, width, height)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg", "ROI JPEG decode and resize (libjpeg-turbo)", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg(void) { return PyModule_Create(&module); }
