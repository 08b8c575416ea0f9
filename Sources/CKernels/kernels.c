#include "ckernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

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

float pk_expf(float x) { return exp_approx(x); }

// Reductions keep 16 partial results so they vectorise without -ffast-math.
#define LANES 16

MULTIVERSION
void pk_softmax_rows(float *p, size_t rows, size_t columns, size_t valid0) {
    for (size_t r = 0; r < rows; r++) {
        float *row = p + r * columns;
        size_t valid = valid0 ? valid0 + r : columns;
        if (valid > columns) valid = columns;
        size_t body = valid - valid % LANES;

        float mx[LANES];
        for (int l = 0; l < LANES; l++) mx[l] = -INFINITY;
        for (size_t j = 0; j < body; j += LANES)
            for (int l = 0; l < LANES; l++) mx[l] = row[j + l] > mx[l] ? row[j + l] : mx[l];
        float m = -INFINITY;
        for (int l = 0; l < LANES; l++) m = mx[l] > m ? mx[l] : m;
        for (size_t j = body; j < valid; j++) m = row[j] > m ? row[j] : m;

        for (size_t j = 0; j < valid; j++) row[j] = exp_approx(row[j] - m);

        float acc[LANES] = {0};
        for (size_t j = 0; j < body; j += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += row[j + l];
        float sum = 0.0f;
        for (int l = 0; l < LANES; l++) sum += acc[l];
        for (size_t j = body; j < valid; j++) sum += row[j];

        float inv = 1.0f / sum;
        for (size_t j = 0; j < valid; j++) row[j] *= inv;
        for (size_t j = valid; j < columns; j++) row[j] = 0.0f;
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
