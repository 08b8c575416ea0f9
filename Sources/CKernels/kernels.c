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

MULTIVERSION
void pk_softmax_rows(float *p, size_t rows, size_t columns, size_t valid0) {
    for (size_t r = 0; r < rows; r++) {
        float *row = p + r * columns;
        size_t valid = valid0 ? valid0 + r : columns;
        if (valid > columns) valid = columns;
        float inv = 1.0f / exp_shifted_sum(row, valid, row_max(row, valid));
        for (size_t j = 0; j < valid; j++) row[j] *= inv;
        for (size_t j = valid; j < columns; j++) row[j] = 0.0f;
    }
}

MULTIVERSION
void pk_softmax_online(float *s, size_t rows, size_t columns, float *m, float *l, float *o, size_t ldo,
                       size_t d) {
    for (size_t r = 0; r < rows; r++) {
        float *row = s + r * columns;
        float block_max = row_max(row, columns);
        float previous = o ? m[r] : -INFINITY;
        float mnew = block_max > previous ? block_max : previous;
        float sum = exp_shifted_sum(row, columns, mnew);
        if (o) {
            float decay = exp_approx(previous - mnew);
            float *orow = o + r * ldo;
            for (size_t j = 0; j < d; j++) orow[j] *= decay;
            l[r] = l[r] * decay + sum;
        } else {
            l[r] = sum;
        }
        m[r] = mnew;
    }
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
