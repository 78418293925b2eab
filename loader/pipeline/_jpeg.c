/* tagstream.loader.pipeline._jpeg: the CPU decoder of the train and eval paths.
 *
 * crop_resize() decodes only the crop window of a JPEG (libjpeg-turbo's jpeg_crop_scanline and
 * jpeg_skip_scanlines: no IDCT or colour conversion outside the window, no entropy decoding below it; in a
 * JPEG with restart intervals that tile its rows, none outside the intervals the window covers: _restart.c),
 * resizes the window to size x size with Pillow's bilinear filter (antialiased when downscaling, the
 * filter of torchvision's RandomResizedCrop on PIL images) and mirrors it if asked, into a caller's
 * buffer (the resize is _resize.c's). The GIL is released while it works. Errors and truncated data
 * raise ValueError: a truncated record is never silently padded with grey. Every decode reads the header
 * first and refuses an image over the pixel bound before allocating; check() decodes strictly (corrupt
 * scan data is an error). Reading a frame header from the markers alone is loader/data/_records.c's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

#include "_jpeg.h"

/* The pixel bound of every decode, read from the header before anything is allocated: a forged header
 * (65500 x 65500) must not make a worker allocate tens of GB. Set once from Python (format.MAX_PIXELS). */
unsigned long long max_pixels = 89478485ULL;

static const char *too_large(struct jpeg_decompress_struct *cinfo) {
    if ((unsigned long long)cinfo->image_width * cinfo->image_height <= max_pixels) return NULL;
    static _Thread_local char reason[128];
    snprintf(reason, sizeof reason, "image of %u x %u pixels is over the limit of %llu pixels",
             (unsigned)cinfo->image_width, (unsigned)cinfo->image_height, max_pixels);
    return reason;
}

void on_error(j_common_ptr cinfo) {
    ErrMgr *err = (ErrMgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->msg);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    /* Truncated data (libjpeg pads it with grey) is an error, as it is to Pillow and so to `convert`.
     * Other corrupt-data warnings (extraneous bytes, a bad Huffman code) are passed over, as Pillow
     * does: every record `convert` accepted must decode here too. */
    if (level >= 0) return;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF) on_error(cinfo);
    /* check(): damaged entropy-coded data (a bad Huffman code, a marker inside the scan, lost restart
     * sync) is an error; the harmless ones (extraneous bytes between header markers, an unknown JFIF
     * version, Adobe transform hints) are not. Extraneous bytes before the end of image or a restart
     * marker are scan data no MCU used: damage ("extraneous bytes before marker 0xd9"). */
    int marker = cinfo->err->msg_parm.i[1];
    int in_scan = code == JWRN_EXTRANEOUS_DATA && (marker == 0xD9 || (marker >= 0xD0 && marker <= 0xD7));
    if (((ErrMgr *)cinfo->err)->strict && (in_scan || (code != JWRN_EXTRANEOUS_DATA && code != JWRN_JFIF_MAJOR && code != JWRN_ADOBE_XFORM)))
        on_error(cinfo);
}

/* What to decode, and where the decoded window lies. */
typedef struct {
    int x, y, w, h, whole;     /* in: the train crop window (whole: the full image); out: the decoded window */
    int use_box;               /* in: instead, the rows and columns that resizing `box` to box_size reads */
    double box[4];             /* in: the eval box; out: the box to resize, in the decoded image's pixels */
    int box_size, box_antialias;
    int dct;                   /* in: allow DCT scaling (1/2, 1/4, 1/8) of a region >= 2x box_size on both sides */
    uint8_t *pixels;           /* out: rows of `stride` bytes, the window `offset` bytes into each (thread's scratch) */
    JSAMPROW *rows;
    size_t stride, offset;
    int width, height;         /* out: the image's size at the decoded scale */
    int scale;                 /* out: the DCT scale's denominator (1, 2, 4 or 8) */
} Window;

/* The largest 1/2^k (k <= 3) at which a region of rw x rh source pixels still has >= size pixels on
 * both sides: libjpeg then computes only the low frequencies of each block's IDCT (1/2: 4x4 of 8x8),
 * upsampling and colour conversion run on a quarter of the pixels, and the resize reads fewer. The
 * entropy decoding, most of a full decode at high quality, runs in full at every scale. */
static int dct_scale(double rw, double rh, int size) {
    int s = 1;
    while (s < 8 && rw >= 2.0 * s * size && rh >= 2.0 * s * size) s *= 2;
    return s;
}

/* The libjpeg calls of decode_window, apart from its setjmp so no local can be clobbered. */
static const char *read_window(struct jpeg_decompress_struct *cinfo, const uint8_t *data, size_t len, Window *win) {
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, data, (unsigned long)len);
    jpeg_read_header(cinfo, TRUE);
    const char *big = too_large(cinfo);
    if (big) return big;
    cinfo->out_color_space = JCS_RGB;
    int full_w = (int)cinfo->image_width, full_h = (int)cinfo->image_height;
    double *b = win->box;
    if (win->use_box) {
        if (!(b[0] >= 0 && b[1] >= 0 && b[2] <= full_w && b[3] <= full_h && b[2] > b[0] && b[3] > b[1]))
            return "resize box outside the image";
    } else if (!win->whole) {
        if (win->x < 0 || win->y < 0 || win->w < 1 || win->h < 1 || win->x + win->w > full_w || win->y + win->h > full_h)
            return "crop window outside the image";
        b[0] = win->x, b[1] = win->y, b[2] = (double)win->x + win->w, b[3] = (double)win->y + win->h;
    }
    win->scale = win->dct && !win->whole ? dct_scale(b[2] - b[0], b[3] - b[1], win->box_size) : 1;
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned)win->scale;
    jpeg_start_decompress(cinfo);
    win->width = (int)cinfo->output_width;
    win->height = (int)cinfo->output_height;
    for (int i = 0; i < 4; i++) b[i] /= win->scale; /* scaled pixel j covers source pixels [s*j, s*(j+1)) */
    if (win->whole) {
        win->x = win->y = 0;
        win->w = win->width;
        win->h = win->height;
    } else if (win->use_box) {
        double sx = (b[2] - b[0]) / win->box_size, sy = (b[3] - b[1]) / win->box_size;
        double mx = (win->box_antialias && sx > 1.0 ? sx : 1.0) + 2.0, my = (win->box_antialias && sy > 1.0 ? sy : 1.0) + 2.0;
        int x0 = (int)(b[0] - mx), y0 = (int)(b[1] - my), x1 = (int)(b[2] + mx) + 1, y1 = (int)(b[3] + my) + 1;
        win->x = x0 < 0 ? 0 : x0;
        win->y = y0 < 0 ? 0 : y0;
        win->w = (x1 > win->width ? win->width : x1) - win->x;
        win->h = (y1 > win->height ? win->height : y1) - win->y;
    } else { /* a train crop: exactly its pixels (at scale 1 the window itself), so the taps stop at its edges */
        int x0 = (int)b[0], y0 = (int)b[1], x1 = (int)ceil(b[2]), y1 = (int)ceil(b[3]);
        win->x = x0;
        win->y = y0;
        win->w = (x1 > win->width ? win->width : x1) - x0;
        win->h = (y1 > win->height ? win->height : y1) - y0;
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

/* Where a JPEG with restart intervals holds win's region, cut out as a JPEG of its own (_restart.c) with win
 * shifted to its pixels; otherwise `data` itself. The cut keeps >= 3 decoded pixels around what read_window
 * decodes (2 are needed: fancy chroma upsampling reads one chroma sample beyond), so the window's pixels are the full decode's. */
static const uint8_t *narrowed(const uint8_t *data, size_t *len, Window *win) {
    if (win->whole || !win->box_size) return data;
    double b[4] = {win->x, win->y, (double)win->x + win->w, (double)win->y + win->h}, reach = 1;
    if (win->use_box) memcpy(b, win->box, sizeof b);
    int s = win->dct ? dct_scale(b[2] - b[0], b[3] - b[1], win->box_size) : 1;
    if (win->use_box && win->box_antialias) { /* the filter's reach when downscaling, as read_window's margin */
        double sx = (b[2] - b[0]) / s / win->box_size, sy = (b[3] - b[1]) / s / win->box_size;
        reach = sx > sy ? sx : sy;
        reach = reach > 1 ? reach : 1;
    }
    int region[4];
    for (int i = 0; i < 4; i++) {
        double v = b[i] + (i < 2 ? -1 : 1) * s * (reach + 6);
        region[i] = !(v > -1e9) ? -1000000000 : !(v < 1e9) ? 1000000000 : (int)v; /* NaN and huge: clipped */
    }
    const uint8_t *sub;
    size_t sub_len;
    int dx, dy;
    if (narrow(data, *len, max_pixels, region, &sub, &sub_len, &dx, &dy) != 0) return data;
    win->x -= dx, win->y -= dy;
    win->box[0] -= dx, win->box[2] -= dx, win->box[1] -= dy, win->box[3] -= dy;
    *len = sub_len;
    return sub;
}

/* Decode win's window into this thread's scratch buffer; NULL on success, else the reason. */
static const char *decode_window(const uint8_t *data, size_t len, Window *win) {
    data = narrowed(data, &len, win);
    struct jpeg_decompress_struct cinfo;
    ErrMgr err;
    const char *volatile fail = NULL;
    win->pixels = NULL;
    win->rows = NULL;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.msg[0] = 0;
    err.strict = 0;
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

/* Decode win's region of `data` (at the DCT scale dct_scale picks, when win->dct), resize its box to
 * size x size into `out`; releases both buffers. Train windows decode exactly the window, so the taps stop
 * at its edges (torchvision crops, then resizes); eval boxes decode a margin, so the taps see the
 * neighbours (it resizes, then crops). */
static PyObject *decode_and_resize(Py_buffer *data, Py_buffer *out, Window *win, int mirror) {
    const char *fail = NULL;
    int size = win->box_size;
    if (size < 1 || out->len != (Py_ssize_t)size * size * 3) fail = "output buffer must hold size * size * 3 bytes";
    Py_BEGIN_ALLOW_THREADS
    if (!fail) fail = decode_window(data->buf, (size_t)data->len, win);
    if (!fail) {
        const double *b = win->box, rel[4] = {b[0] - win->x, b[1] - win->y, b[2] - win->x, b[3] - win->y};
        if (resize_box(win->pixels + win->offset, win->stride, win->w, win->h, rel, size, mirror, win->box_antialias, out->buf) != 0)
            fail = "out of memory";
    }
    scratch_trim();
    Py_END_ALLOW_THREADS
    PyBuffer_Release(data);
    PyBuffer_Release(out);
    if (fail) return PyErr_Format(PyExc_ValueError, "JPEG %s", fail);
    Py_RETURN_NONE;
}

static PyObject *py_crop_resize(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    int x, y, w, h, size, mirror, antialias, dct;
    if (!PyArg_ParseTuple(args, "y*iiiiw*ippp", &data, &x, &y, &w, &h, &out, &size, &mirror, &antialias, &dct)) return NULL;
    Window win = {.x = x, .y = y, .w = w, .h = h, .box_size = size, .box_antialias = antialias, .dct = dct};
    return decode_and_resize(&data, &out, &win, mirror);
}

static PyObject *py_box_resize(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    double x0, y0, x1, y1;
    int size, mirror, antialias, dct;
    if (!PyArg_ParseTuple(args, "y*ddddw*ippp", &data, &x0, &y0, &x1, &y1, &out, &size, &mirror, &antialias, &dct)) return NULL;
    Window win = {.use_box = 1, .box = {x0, y0, x1, y1}, .box_size = size, .box_antialias = antialias, .dct = dct};
    return decode_and_resize(&data, &out, &win, mirror);
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
    PyObject *buf = fail ? NULL : PyByteArray_FromStringAndSize((const char *)win.pixels, (Py_ssize_t)win.stride * win.height);
    scratch_trim();
    if (fail) return PyErr_Format(PyExc_ValueError, "JPEG %s", fail);
    if (!buf) return NULL;
    return Py_BuildValue("(Nii)", buf, win.width, win.height);
}

/* The libjpeg calls of check(): header, pixel bound, then every scan entropy-decoded at 1/8 scale
 * (the DCT scaling skips most of the IDCT; the Huffman decoding, where damage shows, runs in full). */
static const char *check_scan(struct jpeg_decompress_struct *cinfo, const uint8_t *data, size_t len, int *w, int *h) {
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, data, (unsigned long)len);
    jpeg_read_header(cinfo, TRUE);
    *w = (int)cinfo->image_width;
    *h = (int)cinfo->image_height;
    const char *big = too_large(cinfo);
    if (big) return big;
    cinfo->scale_num = 1;
    cinfo->scale_denom = 8;
    cinfo->dct_method = JDCT_IFAST;
    jpeg_start_decompress(cinfo);
    JSAMPROW row = scratch(&scratch_pixels, (size_t)cinfo->output_width * cinfo->output_components);
    if (!row) return "out of memory";
    while (cinfo->output_scanline < cinfo->output_height) jpeg_read_scanlines(cinfo, &row, 1);
    jpeg_finish_decompress(cinfo);
    return NULL;
}

static PyObject *py_check(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    struct jpeg_decompress_struct cinfo;
    ErrMgr err;
    const char *volatile fail = NULL;
    int w = 0, h = 0;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.msg[0] = 0;
    err.strict = 1;
    char reason[JMSG_LENGTH_MAX + 128];
    Py_BEGIN_ALLOW_THREADS
    if (setjmp(err.jump)) fail = err.msg[0] ? err.msg : "unknown libjpeg error";
    else fail = check_scan(&cinfo, data.buf, (size_t)data.len, &w, &h);
    if (fail) snprintf(reason, sizeof reason, "%s", fail); /* err.msg dies with cinfo */
    jpeg_destroy_decompress(&cinfo);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (fail) return PyErr_Format(PyExc_ValueError, "JPEG %s", reason);
    return Py_BuildValue("(ii)", w, h);
}

static PyObject *py_set_max_pixels(PyObject *self, PyObject *args) {
    unsigned long long n;
    if (!PyArg_ParseTuple(args, "K", &n)) return NULL;
    max_pixels = n;
    Py_RETURN_NONE;
}

static PyObject *py_resize(PyObject *self, PyObject *args) {
    Py_buffer src, out;
    int w, h, size, mirror, antialias;
    double box[4] = {-1, -1, -1, -1};
    if (!PyArg_ParseTuple(args, "y*iiw*ipp|(dddd)", &src, &w, &h, &out, &size, &mirror, &antialias, &box[0], &box[1], &box[2], &box[3]))
        return NULL;
    const char *fail = NULL;
    if (box[2] < 0) {
        box[0] = box[1] = 0;
        box[2] = w;
        box[3] = h;
    }
    if (w < 1 || h < 1 || src.len != (Py_ssize_t)w * h * 3) fail = "source buffer must hold w * h * 3 bytes";
    else if (size < 1 || out.len != (Py_ssize_t)size * size * 3) fail = "output buffer must hold size * size * 3 bytes";
    else if (!(box[0] >= 0 && box[1] >= 0 && box[2] <= w && box[3] <= h && box[2] > box[0] && box[3] > box[1])) fail = "resize box outside the image";
    Py_BEGIN_ALLOW_THREADS
    if (!fail && resize_box(src.buf, (size_t)w * 3, w, h, box, size, mirror, antialias, out.buf) != 0) fail = "out of memory";
    scratch_trim();
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    if (fail) return PyErr_Format(PyExc_ValueError, "%s", fail);
    Py_RETURN_NONE;
}

static PyObject *py_simd(PyObject *self, PyObject *args) {
    int enable = -1;
    if (!PyArg_ParseTuple(args, "|i", &enable)) return NULL;
    return PyBool_FromLong(resize_simd(enable));
}

static PyMethodDef methods[] = {
    {"simd", py_simd, METH_VARARGS, "simd([enable]) -> whether the AVX2 resize runs (0: force the portable path, 1: AVX2 if the CPU has it)."},
    {"resize", py_resize, METH_VARARGS,
     "resize(src, w, h, out, size, mirror, antialias[, (x0, y0, x1, y1)]): the resize of crop_resize on an h x w RGB image "
     "in memory; with a box, Pillow's resize(box=...)."},
    {"box_resize", py_box_resize, METH_VARARGS,
     "box_resize(data, x0, y0, x1, y1, out, size, mirror, antialias, dct): decode the rows and columns that resizing the "
     "source box to size x size reads (at 1/2, 1/4 or 1/8 scale if dct and the box is >= 2x size), and resize it as "
     "Pillow's resize(box=...) (the eval centre crop)."},
    {"crop_resize", py_crop_resize, METH_VARARGS,
     "crop_resize(data, x, y, w, h, out, size, mirror, antialias, dct): decode the window (at 1/2, 1/4 or 1/8 scale "
     "if dct and it is >= 2x size on both sides), resize it to size x size (Pillow's bilinear filter), mirror it if "
     "asked, into `out` (size*size*3 bytes, RGB). ValueError on bad data."},
    {"check", py_check, METH_VARARGS,
     "check(data) -> (width, height): the header within the pixel bound and every scan decodable without a "
     "corrupt-data warning (strict; decoded at 1/8 scale). ValueError naming the fault otherwise."},
    {"add_restarts", py_add_restarts, METH_VARARGS,
     "add_restarts(data, interval) -> bytes: the same DCT coefficients rewritten with restart markers every `interval` "
     "MCUs (the divisor of the MCUs per row nearest it; <= 0: every MCU row) and optimized Huffman tables."},
    {"narrow", py_narrow, METH_VARARGS,
     "narrow(data, x0, y0, x1, y1) -> (jpeg, dx, dy) or None: the restart intervals holding the region as a JPEG of "
     "their own, whose top-left pixel is (dx, dy) of the original; None when the data cannot be narrowed."},
    {"set_max_pixels", py_set_max_pixels, METH_VARARGS, "set_max_pixels(n): the pixel bound of every decode (header checked first)."},
    {"decode", py_decode, METH_VARARGS, "decode(data) -> (bytearray of height*width*3 RGB bytes, width, height)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg", "ROI JPEG decode and resize (libjpeg-turbo)", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg(void) {
    resize_init();
    return PyModule_Create(&module);
}
