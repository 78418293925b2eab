/* Pillow's bilinear resize (antialiased when downscaling) of an RGB image in memory, for
 * tagstream.loader.pipeline._jpeg (_jpeg.c decodes, this file resizes): fixed-point taps; one output row at a time,
 * the vertical pass along the source rows into a row buffer that stays in L1, then the horizontal pass
 * straight from it into the output row (mirrored if asked), no transposes; AVX2 kernels for both passes
 * where the CPU has them; and the per-thread scratch buffers both files use.
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
static _Thread_local Scratch scratch_vert, scratch_hcoeff;

void scratch_trim(void) {
    Scratch *all[] = {&scratch_pixels, &scratch_vert, &scratch_hcoeff, &scratch_marks, &scratch_stream};
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

/* One output pixel of the horizontal pass, portable: the `count` taps from RGB pixel `first` of `row`. */
static inline void horizontal_pixel_scalar(const uint8_t *row, int first, int count, const int16_t *c, uint8_t *d) {
    int32_t r = 1 << (PRECISION_BITS - 1), g = r, b = r;
    const uint8_t *q = row + (size_t)first * 3;
    for (int k = 0; k < count; k++, q += 3) {
        r += c[k] * (int32_t)q[0];
        g += c[k] * (int32_t)q[1];
        b += c[k] * (int32_t)q[2];
    }
    d[0] = clip8(r);
    d[1] = clip8(g);
    d[2] = clip8(b);
}

/* Reads of a row buffer may run this many bytes past its last pixel (the AVX2 horizontal kernel loads 16
 * bytes at a time for up to 8 taps); the row buffers are allocated with the slack. */
#define ROW_SLACK 32

#ifdef HAVE_AVX2_PATH
/* The horizontal taps of one output pixel as two vectors of coefficient pairs: [c0 c1 x4 | c2 c3 x4] and
 * [c4 c5 x4 | c6 c7 x4] (int16), zero past its count; for outputs with at most 8 taps. */
static void pair_coefficients(const Taps *t, int size, int16_t *v) {
    for (int o = 0; o < size; o++) {
        const int16_t *c = t->coeff + (size_t)o * t->taps;
        int16_t *w = v + (size_t)o * 32;
        for (int half = 0; half < 4; half++) {
            int k = 2 * half;
            int16_t c0 = k < t->count[o] ? c[k] : 0, c1 = k + 1 < t->count[o] ? c[k + 1] : 0;
            for (int lane = 0; lane < 4; lane++) {
                w[8 * half + 2 * lane] = c0;
                w[8 * half + 2 * lane + 1] = c1;
            }
        }
    }
}

/* The horizontal pass of one row with AVX2: per output pixel, 16 source bytes (taps 0-3, then 4-7) shuffled
 * into (r, g, b) pairs of neighbouring taps, widened to int16 and multiply-added against the pairs of
 * coefficients: the three channel sums of four taps in one vpmaddwd. Outputs over 8 taps go the portable way. */
__attribute__((target("avx2"))) static void horizontal_row_avx2(const uint8_t *row, const Taps *t, const int16_t *pairs, int size, int mirror, uint8_t *out) {
    const __m128i shuffle = _mm_setr_epi8(0, 3, 1, 4, 2, 5, -1, -1, 6, 9, 7, 10, 8, 11, -1, -1);
    const __m128i half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int p = 0; p < size; p++) {
        int o = mirror ? size - 1 - p : p, count = t->count[o];
        uint8_t *d = out + (size_t)p * 3;
        if (count > 8) {
            horizontal_pixel_scalar(row, t->first[o], count, t->coeff + (size_t)o * t->taps, d);
            continue;
        }
        const uint8_t *q = row + (size_t)t->first[o] * 3;
        const __m256i *c = (const __m256i *)(pairs + (size_t)o * 32);
        __m256i px = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)q), shuffle));
        __m256i acc = _mm256_madd_epi16(px, _mm256_loadu_si256(c));
        if (count > 4) {
            px = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(q + 12)), shuffle));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(px, _mm256_loadu_si256(c + 1)));
        }
        __m128i sum = _mm_add_epi32(_mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1)), half);
        sum = _mm_srai_epi32(sum, PRECISION_BITS);
        sum = _mm_packus_epi16(_mm_packs_epi32(sum, sum), sum);
        uint32_t rgb0 = (uint32_t)_mm_cvtsi128_si32(sum);
        memcpy(d, &rgb0, 3);
    }
}
#endif

/* The horizontal pass of one row: out[p] = output pixel (mirror ? size - 1 - p : p) of `row`. */
static void horizontal_row(const uint8_t *row, const Taps *t, const int16_t *pairs, int size, int mirror, uint8_t *out) {
#ifdef HAVE_AVX2_PATH
    if (pairs) {
        horizontal_row_avx2(row, t, pairs, size, mirror, out);
        return;
    }
#endif
    (void)pairs;
    for (int p = 0; p < size; p++) {
        int o = mirror ? size - 1 - p : p;
        horizontal_pixel_scalar(row, t->first[o], t->count[o], t->coeff + (size_t)o * t->taps, out + (size_t)p * 3);
    }
}

/* Resize the source box (bx0, by0)-(bx1, by1) of the w x h RGB image at src (rows `stride` bytes apart)
 * to size x size into out, as Pillow's resize(box=...) does: taps may reach outside the box, never
 * outside the image. One output row at a time: its vertical pass along the source rows into a row buffer
 * (w pixels, in L1), then its horizontal pass from that buffer into the output row, mirrored if asked. */
int resize_box(const uint8_t *src, size_t stride, int w, int h, const double box[4], int size, int mirror, int antialias, uint8_t *out) {
    Taps tv = {0}, th = {0};
    int ok = -1;
    uint8_t *vert = scratch(&scratch_vert, (size_t)w * 3 + ROW_SLACK);
    if (vert && make_taps(&tv, h, size, box[1], box[3], antialias) == 0 && make_taps(&th, w, size, box[0], box[2], antialias) == 0) {
        int16_t *pairs = NULL;
#ifdef HAVE_AVX2_PATH
        if (use_avx2) {
            pairs = (int16_t *)scratch(&scratch_hcoeff, (size_t)size * 32 * sizeof(int16_t));
            if (pairs) pair_coefficients(&th, size, pairs);
        }
#endif
        memset(vert + (size_t)w * 3, 0, ROW_SLACK);
        for (int y = 0; y < size; y++) {
            resample_rows(src, stride, (size_t)w * 3, &tv, y, y + 1, vert);
            horizontal_row(vert, &th, pairs, size, mirror, out + (size_t)y * size * 3);
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
