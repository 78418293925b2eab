/* Restart intervals: the part of _jpeg.c that reads only the entropy-coded data a window needs.
 *
 * A baseline JPEG must be Huffman-decoded from its first MCU to the window's last: the DC coefficients are
 * coded as differences along the scan, so no MCU can be found without decoding all before it. A JPEG with
 * restart markers (DRI) resets that prediction every `interval` MCUs and marks the place (RST0-7), so an
 * interval can be found by scanning bytes. When the intervals tile the MCU rows (an interval of whole rows,
 * or a divisor of the MCUs per row), narrow() cuts out the intervals a window covers and writes them as a
 * smaller JPEG of their own: the same headers with the frame's size patched, the covered intervals'
 * entropy-coded segments, RST markers renumbered in sequence, EOI. Decoding it decodes exactly the same
 * blocks as the full image (the coefficients are untouched), so the window's pixels are the full decode's
 * as long as the cut leaves the window a margin (fancy upsampling reads one chroma sample beyond it).
 *
 * Anything else (no DRI, progressive or arithmetic coding, several scans, markers missing, out of order
 * or forged, an interval that does not tile the rows) returns no narrowing: the caller decodes the whole
 * stream as before. add_restarts() is the lossless transcode that writes such JPEGs at conversion.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

#include "_jpeg.h"

_Thread_local Scratch scratch_marks, scratch_stream;

/* A single-scan Huffman JPEG with restart intervals that tile its MCU rows. */
typedef struct {
    size_t sof_at, scan_at;  /* the frame header's height field; the first entropy-coded byte */
    int width, height, mcu_w, mcu_h, mcus_x, mcus_y;
    unsigned interval;       /* DRI, in MCUs */
    int rows_per, cols_per;  /* one interval: MCU rows (>= 1) and columns (mcus_x when rows_per > 1) */
    size_t count;            /* intervals */
    uint32_t *marks;         /* interval k's entropy-coded segment: [marks[2k], marks[2k + 1]) (thread scratch) */
} Layout;

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* The frame and scan header of a single-scan Huffman JPEG with restart markers, and where each restart
 * interval's entropy-coded segment lies. 0, or -1 when the stream is not one narrow() can cut. */
static int read_layout(const uint8_t *d, size_t len, unsigned long long max_pixels, Layout *L) {
    memset(L, 0, sizeof *L);
    if (len < 4 || len > UINT32_MAX || d[0] != 0xFF || d[1] != 0xD8) return -1; /* marks are 32-bit offsets */
    size_t i = 2;
    int ncomp = 0, hmax = 0, vmax = 0;
    for (;;) {
        if (i + 4 > len || d[i] != 0xFF) return -1;
        if (d[i + 1] == 0xFF) { /* fill byte before a marker */
            i++;
            continue;
        }
        unsigned m = d[i + 1], n = be16(d + i + 2);
        if (m == 0xD8 || m == 0xD9 || m == 0x01 || (m >= 0xD0 && m <= 0xD7) || n < 2 || i + 2 + n > len) return -1;
        const uint8_t *p = d + i + 4;
        if (m == 0xC0 || m == 0xC1) { /* baseline or extended sequential, Huffman-coded */
            if (ncomp || n < 8 || p[0] != 8) return -1;
            L->sof_at = i + 5;
            L->height = (int)be16(p + 1);
            L->width = (int)be16(p + 3);
            ncomp = p[5];
            if (ncomp < 1 || ncomp > 4 || n != 8 + 3u * ncomp || L->width < 1 || L->height < 1) return -1;
            for (int c = 0; c < ncomp; c++) {
                int h = p[6 + 3 * c + 1] >> 4, v = p[6 + 3 * c + 1] & 15;
                if (h < 1 || h > 4 || v < 1 || v > 4) return -1;
                hmax = h > hmax ? h : hmax;
                vmax = v > vmax ? v : vmax;
            }
        } else if ((m >= 0xC2 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) || m == 0xDC) {
            return -1; /* progressive, lossless, arithmetic, hierarchical; DNL */
        } else if (m == 0xDD) {
            if (n != 4) return -1;
            L->interval = be16(p);
        } else if (m == 0xDA) {
            if (!ncomp || n < 3 || p[0] != ncomp || n != 6 + 2u * ncomp) return -1; /* one scan of every component */
            L->scan_at = i + 2 + n;
            break;
        }
        i += 2 + n;
    }
    if (!L->interval || (unsigned long long)L->width * L->height > max_pixels) return -1;
    L->mcu_w = ncomp == 1 ? 8 : 8 * hmax; /* a single-component scan is not interleaved: an MCU is one block */
    L->mcu_h = ncomp == 1 ? 8 : 8 * vmax;
    L->mcus_x = (L->width + L->mcu_w - 1) / L->mcu_w;
    L->mcus_y = (L->height + L->mcu_h - 1) / L->mcu_h;
    if (L->interval % L->mcus_x == 0) L->rows_per = (int)(L->interval / L->mcus_x), L->cols_per = L->mcus_x;
    else if (L->mcus_x % L->interval == 0) L->rows_per = 1, L->cols_per = (int)L->interval;
    else return -1; /* intervals that do not tile the rows */
    size_t mcus = (size_t)L->mcus_x * L->mcus_y, count = (mcus + L->interval - 1) / L->interval;
    if (count > (len - L->scan_at) / 2 + 1) return -1; /* more intervals than the bytes could mark */
    L->count = count;
    L->marks = (uint32_t *)scratch(&scratch_marks, 2 * count * sizeof(uint32_t));
    if (!L->marks) return -1;
    /* Each segment: [marks[2k], marks[2k+1]); the next starts after its RST marker. */
    size_t k = 0, at = L->scan_at;
    L->marks[0] = (uint32_t)at;
    for (;;) {
        const uint8_t *ff = memchr(d + at, 0xFF, len - at);
        if (!ff) return -1; /* no EOI: truncated */
        size_t f = (size_t)(ff - d), j = f + 1;
        while (j < len && d[j] == 0xFF) j++;
        if (j >= len) return -1;
        if (d[j] == 0x00) {
            at = j + 1;
            continue;
        }
        L->marks[2 * k + 1] = (uint32_t)f;
        if (d[j] == 0xD9) break;
        if (d[j] != 0xD0 + (k & 7) || ++k >= count) return -1; /* out of order, or more markers than intervals */
        at = j + 1;
        L->marks[2 * k] = (uint32_t)at;
    }
    return k + 1 == count ? 0 : -1;
}

/* The smallest stream of whole restart intervals that holds the region [x0, x1) x [y0, y1) of the image
 * (source pixels, clipped to it): a JPEG in this thread's scratch (*out, *out_len) whose top-left pixel is
 * (*dx, *dy) of the original. 0, or -1 when the data cannot be narrowed or narrowing would not skip any
 * interval (then decode `data` itself). */
int narrow(const uint8_t *data, size_t len, unsigned long long max_pixels, const int region[4], const uint8_t **out,
           size_t *out_len, int *dx, int *dy) {
    Layout L;
    if (read_layout(data, len, max_pixels, &L) != 0) return -1;
    int x0 = region[0] < 0 ? 0 : region[0], y0 = region[1] < 0 ? 0 : region[1];
    int x1 = region[2] > L.width ? L.width : region[2], y1 = region[3] > L.height ? L.height : region[3];
    if (x1 <= x0 || y1 <= y0) return -1;
    int cw = L.cols_per * L.mcu_w, rh = L.rows_per * L.mcu_h; /* one interval's width and height in pixels */
    int c0 = x0 / cw, c1 = (x1 + cw - 1) / cw, r0 = y0 / rh, r1 = (y1 + rh - 1) / rh; /* in intervals */
    int per_row = L.mcus_x / L.cols_per, rows = (L.mcus_y + L.rows_per - 1) / L.rows_per;
    if (c0 == 0 && r0 == 0 && c1 >= per_row && r1 >= rows) return -1; /* the whole image */
    int w = c1 >= per_row ? L.width - c0 * cw : (c1 - c0) * cw, h = r1 >= rows ? L.height - r0 * rh : (r1 - r0) * rh;
    size_t bytes = L.scan_at + 2;
    for (int r = r0; r < r1; r++)
        bytes += L.marks[2 * ((size_t)r * per_row + c1 - 1) + 1] - L.marks[2 * ((size_t)r * per_row + c0)] + 2;
    uint8_t *s = scratch(&scratch_stream, bytes);
    if (!s) return -1;
    memcpy(s, data, L.scan_at);
    s[L.sof_at] = (uint8_t)(h >> 8), s[L.sof_at + 1] = (uint8_t)h;
    s[L.sof_at + 2] = (uint8_t)(w >> 8), s[L.sof_at + 3] = (uint8_t)w;
    size_t at = L.scan_at;
    unsigned n = 0;
    for (int r = r0; r < r1; r++)
        for (int c = c0; c < c1; c++) {
            size_t k = (size_t)r * per_row + c, a = L.marks[2 * k], b = L.marks[2 * k + 1];
            if (n) s[at++] = 0xFF, s[at++] = (uint8_t)(0xD0 + ((n - 1) & 7));
            memcpy(s + at, data + a, b - a);
            at += b - a;
            n++;
        }
    s[at++] = 0xFF, s[at++] = 0xD9;
    *out = s;
    *out_len = at;
    *dx = c0 * cw;
    *dy = r0 * rh;
    return 0;
}

/* A growing malloc'd output (libjpeg's jpeg_mem_dest leaves its pointer stale if an error strikes mid-write). */
typedef struct {
    struct jpeg_destination_mgr pub;
    uint8_t *buf;
    size_t cap, used;
} GrowDest;

static void grow_init(j_compress_ptr cinfo) {
    GrowDest *d = (GrowDest *)cinfo->dest;
    d->pub.next_output_byte = d->buf;
    d->pub.free_in_buffer = d->cap;
}

static boolean grow_more(j_compress_ptr cinfo) {
    GrowDest *d = (GrowDest *)cinfo->dest;
    uint8_t *more = realloc(d->buf, 2 * d->cap);
    if (!more) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 10);
    d->pub.next_output_byte = more + d->cap;
    d->pub.free_in_buffer = d->cap;
    d->buf = more;
    d->cap *= 2;
    return TRUE;
}

static void grow_term(j_compress_ptr cinfo) {
    GrowDest *d = (GrowDest *)cinfo->dest;
    d->used = d->cap - d->pub.free_in_buffer;
}

static void transcode_message(j_common_ptr cinfo, int level) {
    if (level < 0) on_error(cinfo); /* strict: a transcode of damaged data would store the damage */
}

/* The interval, in MCUs, that tiles rows of mcus_x MCUs: the divisor of mcus_x nearest `want` (the smaller
 * on a tie), or 0 for one interval per MCU row (want <= 0). */
static unsigned tiling_interval(int mcus_x, int want) {
    if (want <= 0) return 0;
    int best = 1;
    for (int d = 1; d <= mcus_x; d++)
        if (mcus_x % d == 0 && abs(d - want) < abs(best - want)) best = d;
    return (unsigned)best;
}

/* The libjpeg calls of add_restarts, apart from its setjmp. */
static const char *rewrite(struct jpeg_decompress_struct *src, struct jpeg_compress_struct *dst, const uint8_t *data,
                           size_t len, int want, unsigned long long max_pixels, GrowDest *out) {
    jpeg_create_decompress(src);
    jpeg_create_compress(dst);
    jpeg_mem_src(src, data, (unsigned long)len);
    jpeg_save_markers(src, JPEG_COM, 0xFFFF);
    for (int m = 0; m < 16; m++) jpeg_save_markers(src, JPEG_APP0 + m, 0xFFFF);
    jpeg_read_header(src, TRUE);
    if ((unsigned long long)src->image_width * src->image_height > max_pixels) return "image over the pixel limit";
    jvirt_barray_ptr *coefficients = jpeg_read_coefficients(src);
    out->cap = len + 4096;
    if (!(out->buf = malloc(out->cap))) return "out of memory";
    out->pub.init_destination = grow_init;
    out->pub.empty_output_buffer = grow_more;
    out->pub.term_destination = grow_term;
    dst->dest = &out->pub;
    jpeg_copy_critical_parameters(src, dst); /* one interleaved baseline scan of the same coefficients */
    dst->optimize_coding = TRUE;
    int hmax = 1;
    for (int c = 0; c < src->num_components; c++)
        hmax = src->comp_info[c].h_samp_factor > hmax ? src->comp_info[c].h_samp_factor : hmax;
    int mcu_w = src->num_components == 1 ? 8 : 8 * hmax;
    unsigned interval = tiling_interval(((int)src->image_width + mcu_w - 1) / mcu_w, want);
    if (interval) dst->restart_interval = interval;
    else dst->restart_in_rows = 1;
    jpeg_write_coefficients(dst, coefficients);
    for (jpeg_saved_marker_ptr m = src->marker_list; m; m = m->next) { /* jpegtran's -copy all */
        if (dst->write_JFIF_header && m->marker == JPEG_APP0 && m->data_length >= 5 && !memcmp(m->data, "JFIF", 5)) continue;
        if (dst->write_Adobe_marker && m->marker == JPEG_APP0 + 14 && m->data_length >= 5 && !memcmp(m->data, "Adobe", 5))
            continue;
        jpeg_write_marker(dst, m->marker, m->data, m->data_length);
    }
    jpeg_finish_compress(dst);
    jpeg_finish_decompress(src);
    return NULL;
}

/* Losslessly rewrite a JPEG with restart markers (`want` MCUs per interval, rounded to a divisor of the MCUs
 * per row; <= 0: one interval per MCU row) and optimized Huffman tables: the same DCT coefficients, so the
 * same decoded pixels. *out is malloc'd (the caller frees it); NULL, or the reason it failed. */
const char *add_restarts(const uint8_t *data, size_t len, int want, unsigned long long max_pixels, uint8_t **out,
                         size_t *out_len) {
    struct jpeg_decompress_struct src;
    struct jpeg_compress_struct dst;
    ErrMgr err;
    GrowDest dest = {.buf = NULL};
    static _Thread_local char reason[JMSG_LENGTH_MAX];
    const char *volatile fail = NULL;
    src.err = dst.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = transcode_message;
    err.msg[0] = 0;
    err.strict = 1; /* transcode_message: every warning is an error */
    if (setjmp(err.jump)) fail = err.msg[0] ? err.msg : "unknown libjpeg error";
    else fail = rewrite(&src, &dst, data, len, want, max_pixels, &dest);
    jpeg_destroy_compress(&dst);
    jpeg_destroy_decompress(&src);
    if (!fail) {
        *out = dest.buf;
        *out_len = dest.used;
        return NULL;
    }
    free(dest.buf);
    snprintf(reason, sizeof reason, "%s", fail);
    return reason;
}

PyObject *py_add_restarts(PyObject *self, PyObject *args) {
    Py_buffer data;
    int want;
    if (!PyArg_ParseTuple(args, "y*i", &data, &want)) return NULL;
    uint8_t *out;
    size_t out_len;
    const char *fail;
    Py_BEGIN_ALLOW_THREADS
    fail = add_restarts(data.buf, (size_t)data.len, want, max_pixels, &out, &out_len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (fail) return PyErr_Format(PyExc_ValueError, "JPEG %s", fail);
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
    free(out);
    return bytes;
}

PyObject *py_narrow(PyObject *self, PyObject *args) {
    Py_buffer data;
    int region[4], dx, dy;
    if (!PyArg_ParseTuple(args, "y*iiii", &data, &region[0], &region[1], &region[2], &region[3])) return NULL;
    const uint8_t *sub;
    size_t sub_len;
    int cut;
    Py_BEGIN_ALLOW_THREADS
    cut = narrow(data.buf, (size_t)data.len, max_pixels, region, &sub, &sub_len, &dx, &dy);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (cut != 0) Py_RETURN_NONE;
    PyObject *jpeg = PyBytes_FromStringAndSize((const char *)sub, (Py_ssize_t)sub_len);
    scratch_trim();
    return jpeg ? Py_BuildValue("(Nii)", jpeg, dx, dy) : NULL;
}
