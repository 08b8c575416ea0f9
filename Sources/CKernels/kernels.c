#include "ckernels.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static _Thread_local float *scratch_buffers[5];
static _Thread_local size_t scratch_sizes[5];

float *pk_scratch(size_t count, int slot) {
    if (scratch_sizes[slot] < count) {
        free(scratch_buffers[slot]);
        scratch_buffers[slot] = aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64);
        if (!scratch_buffers[slot]) abort();
        scratch_sizes[slot] = count;
    }
    return scratch_buffers[slot];
}

void pk_retain_freed_memory(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed threshold
    mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
#endif
}

#if defined(__x86_64__) && defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

// Cephes-style expf: x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial for e^r, and 2^n
// built in the exponent bits. Branch-free so loops over it vectorise.
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// Reductions keep 16 partial results so they vectorise without -ffast-math.
#define LANES 16

// The largest of n values.
static inline __attribute__((always_inline)) float row_max(const float *row, size_t n) {
    size_t body = n - n % LANES;
    float mx[LANES];
    for (int l = 0; l < LANES; l++) mx[l] = -INFINITY;
    for (size_t j = 0; j < body; j += LANES)
        for (int l = 0; l < LANES; l++) mx[l] = row[j + l] > mx[l] ? row[j + l] : mx[l];
    float m = -INFINITY;
    for (int l = 0; l < LANES; l++) m = mx[l] > m ? mx[l] : m;
    for (size_t j = body; j < n; j++) m = row[j] > m ? row[j] : m;
    return m;
}

// row[j] = e^(row[j] − m) for n values; returns their sum.
static inline __attribute__((always_inline)) float exp_shifted_sum(float *row, size_t n, float m) {
    size_t body = n - n % LANES;
    for (size_t j = 0; j < n; j++) row[j] = exp_approx(row[j] - m);
    float acc[LANES] = {0};
    for (size_t j = 0; j < body; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += row[j + l];
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += acc[l];
    for (size_t j = body; j < n; j++) sum += row[j];
    return sum;
}

// row[j] *= factor for n values.
static inline __attribute__((always_inline)) void scale_row(float *row, size_t n, float factor) {
    for (size_t j = 0; j < n; j++) row[j] *= factor;
}

// The two softmax kernels, over row primitives (the largest of n values; e^(x − m) in place
// returning the sum; scaling in place), defined once for the portable primitives and once for the
// AVX-512 ones. softmax_rows: each row, with the first valid0 + r columns of row r kept when
// valid0 is not 0 (a causal mask), the rest zeroed. softmax_online: one key block of an online
// softmax, updating each row's running maximum m and sum l and rescaling its output row o (ldo
// apart, d values) by how much the maximum grew; o NULL for the first block.
#define SOFTMAX_KERNELS(suffix, attributes, row_max_f, exp_sum_f, scale_f)                              \
    attributes static void softmax_rows_##suffix(float *p, size_t rows, size_t columns, size_t valid0) { \
        for (size_t r = 0; r < rows; r++) {                                                            \
            float *row = p + r * columns;                                                              \
            size_t valid = valid0 ? valid0 + r : columns;                                              \
            if (valid > columns) valid = columns;                                                      \
            scale_f(row, valid, 1.0f / exp_sum_f(row, valid, row_max_f(row, valid)));                  \
            for (size_t j = valid; j < columns; j++) row[j] = 0.0f;                                    \
        }                                                                                              \
    }                                                                                                  \
    attributes static void softmax_online_##suffix(float *s, size_t rows, size_t columns, float *m,     \
                                                   float *l, float *o, size_t ldo, size_t d) {          \
        for (size_t r = 0; r < rows; r++) {                                                            \
            float *row = s + r * columns;                                                              \
            float block_max = row_max_f(row, columns);                                                 \
            float previous = o ? m[r] : -INFINITY;                                                     \
            float mnew = block_max > previous ? block_max : previous;                                  \
            float sum = exp_sum_f(row, columns, mnew);                                                 \
            if (o) {                                                                                   \
                float decay = exp_approx(previous - mnew);                                             \
                scale_f(o + r * ldo, d, decay);                                                        \
                l[r] = l[r] * decay + sum;                                                             \
            } else {                                                                                   \
                l[r] = sum;                                                                            \
            }                                                                                          \
            m[r] = mnew;                                                                               \
        }                                                                                              \
    }

SOFTMAX_KERNELS(generic, MULTIVERSION, row_max, exp_shifted_sum, scale_row)

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define HAVE_AVX512 1
#define AVX512_TARGET __attribute__((target("avx512f,avx512dq")))

// exp_approx on 16 lanes, 2^n by vscalefps. Arguments are ≤ 0 here (scores minus their maximum).
AVX512_TARGET static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

AVX512_TARGET static inline __mmask16 tail_mask(size_t left) { return (__mmask16)((1u << left) - 1); }

AVX512_TARGET static float row_max16(const float *row, size_t n) {
    __m512 a0 = _mm512_set1_ps(-INFINITY), a1 = a0;
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        a0 = _mm512_max_ps(a0, _mm512_loadu_ps(row + j));
        a1 = _mm512_max_ps(a1, _mm512_loadu_ps(row + j + 16));
    }
    for (; j + 16 <= n; j += 16) a0 = _mm512_max_ps(a0, _mm512_loadu_ps(row + j));
    if (j < n) a0 = _mm512_max_ps(a0, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - j), row + j));
    return _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
}

// row[j] = e^(row[j] − m), returning their sum: one pass, four independent vectors at a time
// (the generic loop's exp, store and sum passes run at half this speed).
AVX512_TARGET static float exp_shifted_sum16(float *row, size_t n, float m) {
    __m512 mm = _mm512_set1_ps(m), a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        __m512 e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), mm));
        __m512 e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j + 16), mm));
        __m512 e2 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j + 32), mm));
        __m512 e3 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j + 48), mm));
        _mm512_storeu_ps(row + j, e0);
        _mm512_storeu_ps(row + j + 16, e1);
        _mm512_storeu_ps(row + j + 32, e2);
        _mm512_storeu_ps(row + j + 48, e3);
        a0 = _mm512_add_ps(a0, e0);
        a1 = _mm512_add_ps(a1, e1);
        a2 = _mm512_add_ps(a2, e2);
        a3 = _mm512_add_ps(a3, e3);
    }
    for (; j + 16 <= n; j += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), mm));
        _mm512_storeu_ps(row + j, e);
        a0 = _mm512_add_ps(a0, e);
    }
    if (j < n) {
        __mmask16 k = tail_mask(n - j);
        __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), mm)));
        _mm512_mask_storeu_ps(row + j, k, e);
        a0 = _mm512_add_ps(a0, e);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

AVX512_TARGET static void scale_row16(float *row, size_t n, float factor) {
    __m512 f = _mm512_set1_ps(factor);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(row + j, _mm512_mul_ps(_mm512_loadu_ps(row + j), f));
    if (j < n) _mm512_mask_storeu_ps(row + j, tail_mask(n - j), _mm512_mul_ps(_mm512_maskz_loadu_ps(tail_mask(n - j), row + j), f));
}

SOFTMAX_KERNELS(avx512, AVX512_TARGET, row_max16, exp_shifted_sum16, scale_row16)

// dst[c·ld_dst + r] = src[r·ld_src + c] for one 16x16 block: unpacks within 128-bit lanes, then
// lane shuffles.
AVX512_TARGET static void transpose16(const float *src, size_t ld_src, float *dst, size_t ld_dst) {
    __m512 r[16], t[16], u[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ld_src);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);      // per lane: r_i[4k], r_i+1[4k], r_i[4k+1], r_i+1[4k+1]
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);  // the same for 4k+2 and 4k+3
    }
    for (int g = 0; g < 4; g++) {  // u[4g + m], lane k: rows 4g..4g+3 of column 4k + m
        __m512 a = t[4 * g], b = t[4 * g + 1], c = t[4 * g + 2], d = t[4 * g + 3];
        u[4 * g] = _mm512_shuffle_ps(a, c, 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(a, c, 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(b, d, 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(b, d, 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        __m512 v = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), w = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
        __m512 x = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88), y = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
        _mm512_storeu_ps(dst + (size_t)m * ld_dst, _mm512_shuffle_f32x4(v, x, 0x88));
        _mm512_storeu_ps(dst + (size_t)(4 + m) * ld_dst, _mm512_shuffle_f32x4(w, y, 0x88));
        _mm512_storeu_ps(dst + (size_t)(8 + m) * ld_dst, _mm512_shuffle_f32x4(v, x, 0xDD));
        _mm512_storeu_ps(dst + (size_t)(12 + m) * ld_dst, _mm512_shuffle_f32x4(w, y, 0xDD));
    }
}
#else
#define HAVE_AVX512 0
#endif

void pk_transpose(const float *src, size_t ld_src, float *dst, size_t ld_dst, size_t rows, size_t columns) {
    size_t r0 = 0;
#if HAVE_AVX512
    if (pk_avx512_supported()) {
        for (; r0 + 16 <= rows; r0 += 16)
            for (size_t c0 = 0; c0 + 16 <= columns; c0 += 16)
                transpose16(src + r0 * ld_src + c0, ld_src, dst + c0 * ld_dst + r0, ld_dst);
        size_t full = columns - columns % 16;  // the columns past the last whole block, for those rows
        for (size_t r = 0; r < r0; r++)
            for (size_t c = full; c < columns; c++) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
#endif
    for (size_t r = r0; r < rows; r++)
        for (size_t c = 0; c < columns; c++) dst[c * ld_dst + r] = src[r * ld_src + c];
}

void pk_softmax_rows(float *p, size_t rows, size_t columns, size_t valid0) {
#if HAVE_AVX512
    if (pk_avx512_supported()) {
        softmax_rows_avx512(p, rows, columns, valid0);
        return;
    }
#endif
    softmax_rows_generic(p, rows, columns, valid0);
}

void pk_softmax_online(float *s, size_t rows, size_t columns, float *m, float *l, float *o, size_t ldo,
                       size_t d) {
#if HAVE_AVX512
    if (pk_avx512_supported()) {
        softmax_online_avx512(s, rows, columns, m, l, o, ldo, d);
        return;
    }
#endif
    softmax_online_generic(s, rows, columns, m, l, o, ldo, d);
}

MULTIVERSION
void pk_divide_rows(float *o, size_t ldo, const float *l, size_t rows, size_t d) {
    for (size_t r = 0; r < rows; r++) {
        float inv = 1.0f / l[r], *orow = o + r * ldo;
        for (size_t j = 0; j < d; j++) orow[j] *= inv;
    }
}

// Abramowitz & Stegun 7.1.26: erf(x) = 1 − (a1 t + … + a5 t⁵) e^(−x²), t = 1 / (1 + p|x|),
// absolute error ≤ 1.5e-7; branch-free for vectorisation.
static inline float erf_approx(float x) {
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.0f - poly * exp_approx(-ax * ax);
    return x < 0 ? -y : y;
}

MULTIVERSION
void pk_geglu(const float *x, float *out, size_t rows, size_t d) {
    for (size_t r = 0; r < rows; r++) {
        const float *hidden = x + r * 2 * d, *gate = hidden + d;
        float *o = out + r * d;
        for (size_t i = 0; i < d; i++) {
            float g = gate[i];
            o[i] = hidden[i] * 0.5f * g * (1.0f + erf_approx(g * 0.70710678118654752f));
        }
    }
}

MULTIVERSION
void pk_silu(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = p[i] / (1.0f + exp_approx(-p[i]));
}

MULTIVERSION
void pk_scale_shift(const float *x, float *y, size_t n, float scale, float shift, int silu) {
    if (silu) {
        for (size_t i = 0; i < n; i++) {
            float v = x[i] * scale + shift;
            y[i] = v / (1.0f + exp_approx(-v));
        }
    } else {
        for (size_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;
    }
}
