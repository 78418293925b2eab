/* What the C files of tagstream.loader._jpeg share: _jpeg.c (libjpeg-turbo decoding, the Python module),
 * _restart.c (restart intervals: the narrowed decode and the transcode that adds them) and _resize.c
 * (Pillow's bilinear resize, the per-thread scratch buffers). Hidden symbols: the
 * extension exports only its module init. */
#ifndef TAGSTREAM_JPEG_H
#define TAGSTREAM_JPEG_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

/* A per-thread buffer reused across calls (see _resize.c). */
typedef struct {
    uint8_t *p;
    size_t cap;
} Scratch;

extern _Thread_local Scratch scratch_pixels; /* the decoded window */
extern _Thread_local Scratch scratch_marks, scratch_stream; /* _restart.c's interval offsets and narrowed stream */
uint8_t *scratch(Scratch *s, size_t n);       /* at least n bytes, or NULL */
void scratch_trim(void);                      /* free the buffers a huge image grew past their keep size */

/* Resize the source box (x0, y0)-(x1, y1) of the w x h RGB image at src (rows `stride` bytes apart) to
 * size x size into out, mirrored if asked; 0, or -1 when out of memory. */
int resize_box(const uint8_t *src, size_t stride, int w, int h, const double box[4], int size, int mirror, int antialias, uint8_t *out);
void resize_init(void);        /* once at import: use AVX2 where the CPU has it */
int resize_simd(int enable);   /* 0: portable path, 1: AVX2 if present, -1: leave; returns whether AVX2 runs */

/* The restart intervals of `data` that hold the region (x0, y0, x1, y1), as a JPEG of their own whose top-left
 * pixel is (*dx, *dy) of the original (thread scratch); -1 when there is nothing to narrow (decode `data`). */
int narrow(const uint8_t *data, size_t len, unsigned long long max_pixels, const int region[4], const uint8_t **out,
           size_t *out_len, int *dx, int *dy);

/* Losslessly rewrite a JPEG with restart intervals of about `want` MCUs that tile its rows (<= 0: one per MCU
 * row); *out malloc'd (the caller frees it). NULL, or the reason. */
const char *add_restarts(const uint8_t *data, size_t len, int want, unsigned long long max_pixels, uint8_t **out,
                         size_t *out_len);

extern unsigned long long max_pixels; /* the pixel bound of every decode (_jpeg.c) */

#ifdef JPEGLIB_H /* where jpeglib.h (and setjmp.h) came first */
/* The error manager of every libjpeg call here: on_error formats libjpeg's message into msg and longjmps. */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int strict; /* check(): every corrupt-data warning is an error */
} ErrMgr;

void on_error(j_common_ptr cinfo);
#endif

#ifdef Py_PYTHON_H
PyObject *py_add_restarts(PyObject *self, PyObject *args); /* _restart.c's two module functions */
PyObject *py_narrow(PyObject *self, PyObject *args);
#endif

#pragma GCC visibility pop

#endif
