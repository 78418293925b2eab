/* tagstream.loader._jpeg: the CPU decoder of the train and eval paths.
 *
 * crop_resize() decodes only the crop window of a JPEG (libjpeg-turbo's jpeg_crop_scanline and
 * jpeg_skip_scanlines: no IDCT or colour conversion outside the window, no entropy decoding below it),
 * resizes the window to size x size with Pillow's bilinear filter (antialiased when downscaling, the
 * filter of torchvision's RandomResizedCrop on PIL images) and mirrors it if asked, into a caller's
 * buffer. Both resize passes run along contiguous rows (the second on a transposed image), so the
 * compiler vectorises them. The GIL is released while it works. Errors and truncated data raise
 * ValueError: a truncated record is never silently padded with grey.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

/* Fixed-point coefficients: 14 bits fit int16, so the compiler can multiply-add pixel pairs (pmaddwd);
 * Pillow uses 22 bits, the outputs differ by at most 1 (tests/test_turbo.py). */
#define PRECISION_BITS 14

/* Per-thread buffers reused across calls: fresh multi-100-KB mallocs are mmapped and page-faulted on
 * every call, which cost as much as the resize itself. Kept up to SCRATCH_KEEP bytes each; a larger one
 * (a huge image) is freed after its call by scratch_trim. */
#define SCRATCH_KEEP ((size_t)8 << 20)
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

static void scratch_trim(void) {
    Scratch *all[] = {&scratch_pixels, &scratch_vert, &scratch_trans, &scratch_horiz};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (all[i]->cap > SCRATCH_KEEP) {
            free(all[i]->p);
            all[i]->p = NULL;
            all[i]->cap = 0;
        }
    }
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int strict; /* check(): every corrupt-data warning is an error */
} ErrMgr;

/* The pixel bound of every decode, read from the header before anything is allocated: a forged header
 * (65500 x 65500) must not make a worker allocate tens of GB. Set once from Python (format.MAX_PIXELS). */
static unsigned long long max_pixels = 89478485ULL;

static const char *too_large(struct jpeg_decompress_struct *cinfo) {
    if ((unsigned long long)cinfo->image_width * cinfo->image_height <= max_pixels) return NULL;
    static _Thread_local char reason[128];
    snprintf(reason, sizeof reason, "image of %u x %u pixels is over the limit of %llu pixels",
             (unsigned)cinfo->image_width, (unsigned)cinfo->image_height, max_pixels);
    return reason;
}

static void on_error(j_common_ptr cinfo) {
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
     * sync) is an error; the harmless ones (extraneous bytes between markers, an unknown JFIF version,
     * Adobe transform hints) are not. */
    if (((ErrMgr *)cinfo->err)->strict && code != JWRN_EXTRANEOUS_DATA && code != JWRN_JFIF_MAJOR && code != JWRN_ADOBE_XFORM)
        on_error(cinfo);
}

/* Taps of Pillow's bilinear (triangle) filter mapping the source span [box0, box1) of a line of `in`
 * pixels onto `out` pixels (Pillow's precompute_coeffs: taps clamped to [0, in)). */
typedef struct {
    int taps;
    int *first;     /* out: first input pixel */
    int *count;     /* out: taps used */
    int16_t *coeff; /* out x taps, fixed point */
} Taps;

static int make_taps(Taps *t, int in, int out, double box0, double box1, int antialias) {
    double scale = (box1 - box0) / out;
    double filterscale = (antialias && scale > 1.0) ? scale : 1.0;
    double support = filterscale; /* bilinear support is 1 */
    t->taps = (int)(support * 2 + 2);
    t->first = malloc(sizeof(int) * out);
    t->count = malloc(sizeof(int) * out);
    t->coeff = calloc((size_t)out * t->taps, sizeof(int16_t));
    double *k = malloc(sizeof(double) * t->taps);
    if (!t->first || !t->count || !t->coeff || !k) {
        free(k);
        return -1;
    }
    for (int o = 0; o < out; o++) {
        double center = box0 + (o + 0.5) * scale, ww = 0.0;
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
            t->coeff[(size_t)o * t->taps + i] = (int16_t)(v < 0 ? v * (1 << PRECISION_BITS) - 0.5 : v * (1 << PRECISION_BITS) + 0.5);
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

/* One output row of a pass: d[:n] = sum_k c[k] * rows[k][:n], rows `stride` apart, the sums rounded. */
static void resample_row_scalar(const uint8_t *base, size_t stride, size_t n, const int16_t *c, int taps, uint8_t *d) {
    for (size_t i = 0; i < n; i++) {
        int32_t acc = 1 << (PRECISION_BITS - 1);
        for (int k = 0; k < taps; k++) acc += c[k] * (int32_t)base[(size_t)k * stride + i];
        d[i] = clip8(acc);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
/* The same row with AVX2: 16 bytes at a time, two taps per multiply-add (vpmaddwd of interleaved
 * pixel pairs against a (c[k], c[k+1]) pair), the sums in registers; the last n % 16 bytes scalar. */
__attribute__((target("avx2"))) static void resample_row_avx2(const uint8_t *base, size_t stride, size_t n, const int16_t *c, int taps, uint8_t *d) {
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    const __m128i zero = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i lo = half, hi = half;
        for (int k = 0; k < taps; k += 2) {
            const uint8_t *r0 = base + (size_t)k * stride + i;
            __m128i a = _mm_loadu_si128((const __m128i *)r0);
            __m128i b = k + 1 < taps ? _mm_loadu_si128((const __m128i *)(r0 + stride)) : zero;
            int16_t c1 = k + 1 < taps ? c[k + 1] : 0;
            __m256i pair = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)c1 << 16) | (uint16_t)c[k]));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b)), pair));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b)), pair));
        }
        lo = _mm256_srai_epi32(lo, PRECISION_BITS);
        hi = _mm256_srai_epi32(hi, PRECISION_BITS);
        __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8); /* 16 int16 in order */
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
        _mm_storeu_si128((__m128i *)(d + i), bytes);
    }
    if (i < n) resample_row_scalar(base + i, stride, n - i, c, taps, d + i);
}
#endif

static int use_avx2 = 0; /* set once at import from the CPU's flags */

/* dst[o - begin][:n] = sum_k coeff[o][k] * src[first[o] + k][:n] for begin <= o < end: rows of n bytes,
 * src rows `stride` apart. Reads may not run past a row's n bytes: the SIMD path stops 16 bytes early. */
static void resample_rows(const uint8_t *src, size_t stride, size_t n, const Taps *t, int begin, int end, uint8_t *dst) {
    for (int o = begin; o < end; o++) {
        const int16_t *c = t->coeff + (size_t)o * t->taps;
        const uint8_t *base = src + (size_t)t->first[o] * stride;
        uint8_t *d = dst + (size_t)(o - begin) * n;
#ifdef HAVE_AVX2_PATH
        if (use_avx2) {
            resample_row_avx2(base, stride, n, c, t->count[o], d);
            continue;
        }
#endif
        resample_row_scalar(base, stride, n, c, t->count[o], d);
    }
}

/* dst (cols rows of `rows` pixels) = the transpose of src (rows rows of `cols` pixels), RGB. */
static void transpose_rgb(const uint8_t *src, int rows, int cols, uint8_t *dst) {
    for (int c = 0; c < cols; c++) {
        uint8_t *d = dst + (size_t)c * rows * 3;
        const uint8_t *q = src + (size_t)c * 3;
        for (int r = 0; r < rows; r++, q += (size_t)cols * 3) {
            d[3 * r] = q[0];
            d[3 * r + 1] = q[1];
            d[3 * r + 2] = q[2];
        }
    }
}

/* Rows [r0, r0 + rows) of out (cols pixels wide) from blk, which holds them transposed (cols rows of
 * `rows` pixels); mirror reverses the columns. */
static void untranspose_rgb(const uint8_t *blk, int rows, int cols, uint8_t *out, int r0, int mirror) {
    for (int c = 0; c < cols; c++) {
        const uint8_t *q = blk + (size_t)c * rows * 3;
        uint8_t *d = out + ((size_t)r0 * cols + (mirror ? cols - 1 - c : c)) * 3;
        for (int r = 0; r < rows; r++, d += (size_t)cols * 3) {
            d[0] = q[3 * r];
            d[1] = q[3 * r + 1];
            d[2] = q[3 * r + 2];
        }
    }
}

/* Resize the source box (bx0, by0)-(bx1, by1) of the w x h RGB image at src (rows `stride` bytes apart)
 * to size x size into out, as Pillow's resize(box=...) does: taps may reach outside the box, never
 * outside the image. BLOCK output rows at a time so each block's intermediates stay in cache: the
 * vertical pass along the block's rows, a transpose, the horizontal pass as another pass along rows,
 * and the transpose back (with the mirror). */
#define BLOCK 32
static int resize_box(const uint8_t *src, size_t stride, int w, int h, const double box[4], int size, int mirror, int antialias, uint8_t *out) {
    Taps tv = {0}, th = {0};
    int ok = -1;
    uint8_t *vert = scratch(&scratch_vert, (size_t)BLOCK * w * 3);      /* BLOCK rows of w pixels */
    uint8_t *trans = scratch(&scratch_trans, (size_t)w * BLOCK * 3);    /* w rows of BLOCK pixels */
    uint8_t *horiz = scratch(&scratch_horiz, (size_t)size * BLOCK * 3); /* size rows of BLOCK pixels */
    if (vert && trans && horiz && make_taps(&tv, h, size, box[1], box[3], antialias) == 0 &&
        make_taps(&th, w, size, box[0], box[2], antialias) == 0) {
        for (int b0 = 0; b0 < size; b0 += BLOCK) {
            int nb = size - b0 < BLOCK ? size - b0 : BLOCK;
            resample_rows(src, stride, (size_t)w * 3, &tv, b0, b0 + nb, vert);
            transpose_rgb(vert, nb, w, trans);
            resample_rows(trans, (size_t)nb * 3, (size_t)nb * 3, &th, 0, size, horiz);
            untranspose_rgb(horiz, nb, size, out, b0, mirror);
        }
        ok = 0;
    }
    free_taps(&tv);
    free_taps(&th);
    return ok;
}

/* What to decode, and where the decoded window lies. */
typedef struct {
    int x, y, w, h, whole;     /* in: the window (whole: the full image) */
    int use_box;               /* in: instead, the rows and columns that resizing `box` to box_size reads */
    double box[4];
    int box_size, box_antialias;
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
    const char *big = too_large(cinfo);
    if (big) return big;
    cinfo->out_color_space = JCS_RGB;
    jpeg_start_decompress(cinfo);
    win->width = (int)cinfo->output_width;
    win->height = (int)cinfo->output_height;
    if (win->whole) {
        win->x = win->y = 0;
        win->w = win->width;
        win->h = win->height;
    } else if (win->use_box) {
        const double *b = win->box;
        if (!(b[0] >= 0 && b[1] >= 0 && b[2] <= win->width && b[3] <= win->height && b[2] > b[0] && b[3] > b[1]))
            return "resize box outside the image";
        double sx = (b[2] - b[0]) / win->box_size, sy = (b[3] - b[1]) / win->box_size;
        double mx = (win->box_antialias && sx > 1.0 ? sx : 1.0) + 2.0, my = (win->box_antialias && sy > 1.0 ? sy : 1.0) + 2.0;
        int x0 = (int)(b[0] - mx), y0 = (int)(b[1] - my), x1 = (int)(b[2] + mx) + 1, y1 = (int)(b[3] + my) + 1;
        win->x = x0 < 0 ? 0 : x0;
        win->y = y0 < 0 ? 0 : y0;
        win->w = (x1 > win->width ? win->width : x1) - win->x;
        win->h = (y1 > win->height ? win->height : y1) - win->y;
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

/* Decode win's region of `data`, resize `box` (image coordinates) to size x size into `out`; releases
 * both buffers. Train windows decode exactly the window, so the taps stop at its edges (torchvision
 * crops, then resizes); eval boxes decode a margin, so the taps see the neighbours (it resizes, then crops). */
static PyObject *decode_and_resize(Py_buffer *data, Py_buffer *out, Window *win, const double box[4], int size, int mirror, int antialias) {
    const char *fail = NULL;
    if (size < 1 || out->len != (Py_ssize_t)size * size * 3) fail = "output buffer must hold size * size * 3 bytes";
    Py_BEGIN_ALLOW_THREADS
    if (!fail) fail = decode_window(data->buf, (size_t)data->len, win);
    if (!fail) {
        const double rel[4] = {box[0] - win->x, box[1] - win->y, box[2] - win->x, box[3] - win->y};
        if (resize_box(win->pixels + win->offset, win->stride, win->w, win->h, rel, size, mirror, antialias, out->buf) != 0) fail = "out of memory";
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
    int x, y, w, h, size, mirror, antialias;
    if (!PyArg_ParseTuple(args, "y*iiiiw*ipp", &data, &x, &y, &w, &h, &out, &size, &mirror, &antialias)) return NULL;
    Window win = {.x = x, .y = y, .w = w, .h = h};
    const double box[4] = {x, y, (double)x + w, (double)y + h};
    return decode_and_resize(&data, &out, &win, box, size, mirror, antialias);
}

static PyObject *py_box_resize(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    double x0, y0, x1, y1;
    int size, mirror, antialias;
    if (!PyArg_ParseTuple(args, "y*ddddw*ipp", &data, &x0, &y0, &x1, &y1, &out, &size, &mirror, &antialias)) return NULL;
    Window win = {.use_box = 1, .box = {x0, y0, x1, y1}, .box_size = size, .box_antialias = antialias};
    const double box[4] = {x0, y0, x1, y1};
    return decode_and_resize(&data, &out, &win, box, size, mirror, antialias);
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

/* The frame size of a JPEG from its markers alone (no libjpeg): 0 and *w, *h set, or -1 when the data
 * is not a JPEG with a frame header before its first scan. ~0.1 us: cheap enough for every sample. */
static int frame_size(const uint8_t *d, size_t n, int *w, int *h) {
    if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return -1;
    size_t i = 2;
    while (i + 4 <= n) {
        if (d[i] != 0xFF) return -1;
        int m = d[i + 1];
        if (m == 0xFF) { i++; continue; }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (m == 0xD9 || m == 0xDA) return -1;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (i + 9 > n) return -1;
            *h = (d[i + 5] << 8) | d[i + 6];
            *w = (d[i + 7] << 8) | d[i + 8];
            return 0;
        }
        i += 2 + (size_t)((d[i + 2] << 8) | d[i + 3]);
    }
    return -1;
}

static PyObject *py_first_size_mismatch(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_buffer wb, hb;
    if (!PyArg_ParseTuple(args, "Oy*y*", &seq, &wb, &hb)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "buffers must be a sequence");
    Py_ssize_t n = fast ? PySequence_Fast_GET_SIZE(fast) : 0, bad = -1;
    if (fast && (wb.len != n * (Py_ssize_t)sizeof(int64_t) || hb.len != n * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "widths and heights must be int64 arrays as long as buffers");
        Py_CLEAR(fast);
    }
    const int64_t *ws = wb.buf, *hs = hb.buf;
    for (Py_ssize_t k = 0; fast && k < n && bad < 0; k++) {
        Py_buffer b;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, k), &b, PyBUF_SIMPLE) != 0) { Py_CLEAR(fast); break; }
        int w = -1, h = -1;
        if (frame_size(b.buf, (size_t)b.len, &w, &h) != 0 || w != ws[k] || h != hs[k]) bad = k;
        PyBuffer_Release(&b);
    }
    PyBuffer_Release(&wb);
    PyBuffer_Release(&hb);
    if (!fast) return NULL;
    Py_DECREF(fast);
    return PyLong_FromSsize_t(bad);
}

static PyObject *py_frame_size(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    int w = -1, h = -1, rc = frame_size(data.buf, (size_t)data.len, &w, &h);
    PyBuffer_Release(&data);
    if (rc != 0) return PyErr_Format(PyExc_ValueError, "JPEG has no frame header before its first scan");
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
#ifdef HAVE_AVX2_PATH
    if (enable == 0) use_avx2 = 0;
    else if (enable > 0) use_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyBool_FromLong(use_avx2);
}

static PyMethodDef methods[] = {
    {"simd", py_simd, METH_VARARGS, "simd([enable]) -> whether the AVX2 resize runs (0: force the portable path, 1: AVX2 if the CPU has it)."},
    {"resize", py_resize, METH_VARARGS,
     "resize(src, w, h, out, size, mirror, antialias[, (x0, y0, x1, y1)]): the resize of crop_resize on an h x w RGB image "
     "in memory; with a box, Pillow's resize(box=...)."},
    {"box_resize", py_box_resize, METH_VARARGS,
     "box_resize(data, x0, y0, x1, y1, out, size, mirror, antialias): decode the rows and columns that resizing the "
     "source box to size x size reads, and resize it as Pillow's resize(box=...) (the eval centre crop)."},
    {"crop_resize", py_crop_resize, METH_VARARGS,
     "crop_resize(data, x, y, w, h, out, size, mirror, antialias): decode the window, resize it to size x size "
     "(Pillow's bilinear filter), mirror it if asked, into `out` (size*size*3 bytes, RGB). ValueError on bad data."},
    {"check", py_check, METH_VARARGS,
     "check(data) -> (width, height): the header within the pixel bound and every scan decodable without a "
     "corrupt-data warning (strict; decoded at 1/8 scale). ValueError naming the fault otherwise."},
    {"frame_size", py_frame_size, METH_VARARGS, "frame_size(data) -> (width, height) from the JPEG's markers (no decoding); ValueError if none."},
    {"first_size_mismatch", py_first_size_mismatch, METH_VARARGS,
     "first_size_mismatch(buffers, widths, heights) -> the first k whose JPEG frame is not widths[k] x heights[k] "
     "(int64 arrays), or -1."},
    {"set_max_pixels", py_set_max_pixels, METH_VARARGS, "set_max_pixels(n): the pixel bound of every decode (header checked first)."},
    {"decode", py_decode, METH_VARARGS, "decode(data) -> (bytearray of height*width*3 RGB bytes, width, height)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg", "ROI JPEG decode and resize (libjpeg-turbo)", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg(void) {
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyModule_Create(&module);
}
