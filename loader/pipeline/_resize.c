/* Pillow's bilinear resize (antialiased when downscaling) of an RGB image in memory, for
 * tagstream.loader.pipeline._jpeg (_jpeg.c decodes, this file resizes): fixed-point taps, both passes along
 * contiguous rows (the second on a transposed block), an AVX2 row kernel where the CPU has one; and the
 * per-thread scratch buffers both files use.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_jpeg.h"

/* Fixed-point coefficients: 14 bits fit int16, so the compiler can multiply-add pixel pairs (pmaddwd);
 * Pillow uses 22 bits, the outputs differ by at most 1 (tests/test_turbo.py). */
#define PRECISION_BITS 14

/* Per-thread buffers reused across calls: fresh multi-100-KB mallocs are mmapped and page-faulted on
 * every call, which cost as much as the resize itself. Kept up to SCRATCH_KEEP bytes each; a larger one
 * (a huge image) is freed after its call by scratch_trim. */
#define SCRATCH_KEEP ((size_t)8 << 20)

uint8_t *scratch(Scratch *s, size_t n) {
    if (n > s->cap) {
        free(s->p);
        s->p = malloc(n);
        s->cap = s->p ? n : 0;
    }
    return s->p;
}

_Thread_local Scratch scratch_pixels;
static _Thread_local Scratch scratch_vert, scratch_trans, scratch_horiz;

void scratch_trim(void) {
    Scratch *all[] = {&scratch_pixels, &scratch_vert, &scratch_trans, &scratch_horiz};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (all[i]->cap > SCRATCH_KEEP) {
            free(all[i]->p);
            all[i]->p = NULL;
            all[i]->cap = 0;
        }
    }
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

static int use_avx2 = 0; /* set once at import from the CPU's flags (resize_init) */

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
int resize_box(const uint8_t *src, size_t stride, int w, int h, const double box[4], int size, int mirror, int antialias, uint8_t *out) {
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

void resize_init(void) {
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
}

int resize_simd(int enable) {
#ifdef HAVE_AVX2_PATH
    if (enable == 0) use_avx2 = 0;
    else if (enable > 0) use_avx2 = __builtin_cpu_supports("avx2");
#endif
    (void)enable;
    return use_avx2;
}
