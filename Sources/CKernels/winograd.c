// Winograd F(4x4, 3x3) convolution transforms (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016), float32. A 3x3 stride-1 convolution becomes 36 independent matrix
// products (one per point of the 6x6 transformed tile) of 1/4 the direct method's multiplies;
// the products run in OpenBLAS, these functions only move data in and out of the transformed
// domain. Interpolation points 0, ±1, ±2, ∞:
//   Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   G  = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
// Rows are transformed along x for a whole row of tiles at once, with the tiles' columns split
// into phase arrays first, so every inner loop runs over contiguous tiles and vectorises.

#include "ckernels.h"
#include <string.h>

#if defined(__x86_64__) && defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

MULTIVERSION
void pk_winograd_weights(const float *weight, size_t out_channels, size_t channels, size_t first,
                         size_t count, float *u) {
    const float sixth = 1.0f / 6.0f, twelfth = 1.0f / 12.0f, twentyfourth = 1.0f / 24.0f;
    size_t stride = out_channels * channels;
    enum { L = 16 };  // input channels per block: the lanes every loop below runs over
    for (size_t co = first; co < first + count; co++) {
        const float *w = weight + co * channels * 9;
        for (size_t c0 = 0; c0 < channels; c0 += L) {
            size_t n = channels - c0 < L ? channels - c0 : L;
            float g[9][L] = {{0}}, t[6][3][L], r[6][L];
            for (size_t l = 0; l < n; l++)
                for (int k = 0; k < 9; k++) g[k][l] = w[(c0 + l) * 9 + k];
            for (int x = 0; x < 3; x++)  // G · g
                for (int l = 0; l < L; l++) {
                    float g0 = g[x][l], g1 = g[3 + x][l], g2 = g[6 + x][l];
                    t[0][x][l] = g0 * 0.25f;
                    t[1][x][l] = -(g0 + g1 + g2) * sixth;
                    t[2][x][l] = -(g0 - g1 + g2) * sixth;
                    t[3][x][l] = g0 * twentyfourth + g1 * twelfth + g2 * sixth;
                    t[4][x][l] = g0 * twentyfourth - g1 * twelfth + g2 * sixth;
                    t[5][x][l] = g2;
                }
            for (int i = 0; i < 6; i++) {  // (G · g) · Gᵀ
                for (int l = 0; l < L; l++) {
                    float g0 = t[i][0][l], g1 = t[i][1][l], g2 = t[i][2][l];
                    r[0][l] = g0 * 0.25f;
                    r[1][l] = -(g0 + g1 + g2) * sixth;
                    r[2][l] = -(g0 - g1 + g2) * sixth;
                    r[3][l] = g0 * twentyfourth + g1 * twelfth + g2 * sixth;
                    r[4][l] = g0 * twentyfourth - g1 * twelfth + g2 * sixth;
                    r[5][l] = g2;
                }
                for (int j = 0; j < 6; j++)
                    memcpy(u + (size_t)(i * 6 + j) * stride + co * channels + c0, r[j], n * sizeof(float));
            }
        }
    }
}

// o[k][0..<n] = (Bᵀ d)[k] for six input vectors d[0..5] of n values.
static inline void input_rows(float *const d[6], float *const o[6], size_t n) {
    for (size_t x = 0; x < n; x++) {
        float d0 = d[0][x], d1 = d[1][x], d2 = d[2][x], d3 = d[3][x], d4 = d[4][x], d5 = d[5][x];
        o[0][x] = 4 * d0 - 5 * d2 + d4;
        o[1][x] = -4 * d1 - 4 * d2 + d3 + d4;
        o[2][x] = 4 * d1 - 4 * d2 - d3 + d4;
        o[3][x] = -2 * d1 - d2 + 2 * d3 + d4;
        o[4][x] = 2 * d1 - d2 - 2 * d3 + d4;
        o[5][x] = 4 * d1 - 5 * d3 + d5;
    }
}

MULTIVERSION
void pk_winograd_input(const float *input, size_t channels, size_t height, size_t width, size_t pad_top,
                       size_t pad_left, size_t tile_row, size_t tiles_x, float *v, size_t ldv,
                       size_t point_stride) {
    // Input columns the row of tiles reads (4·tiles_x + 2, padding included), rounded up to whole
    // groups of 4 so the columns split into 4 phases of tiles_x + 1 values each.
    size_t span = 4 * tiles_x + 4;
    float *scratch = pk_scratch(12 * span + 4 * (tiles_x + 1), 1);
    float *rows[6], *columns[6], *phases[6];
    for (int k = 0; k < 6; k++) {
        rows[k] = scratch + k * span;
        columns[k] = scratch + (6 + k) * span;
    }
    for (int k = 0; k < 4; k++) phases[k] = scratch + 12 * span + k * (tiles_x + 1);
    phases[4] = phases[0] + 1;  // a tile's columns 4 and 5 are the next tile's columns 0 and 1
    phases[5] = phases[1] + 1;
    float *p0 = phases[0], *p1 = phases[1], *p2 = phases[2], *p3 = phases[3];
    float *outs[6];
    for (size_t c = 0; c < channels; c++) {
        const float *plane = input + c * height * width;
        for (int r = 0; r < 6; r++) {  // six input rows, zero-padded
            long y = (long)(tile_row * 4 + r) - (long)pad_top;
            float *dst = rows[r];
            if (y < 0 || y >= (long)height) {
                memset(dst, 0, span * sizeof(float));
                continue;
            }
            const float *src = plane + (size_t)y * width;
            size_t lo = pad_left < span ? pad_left : span;
            size_t hi = width + pad_left < span ? width + pad_left : span;
            memset(dst, 0, lo * sizeof(float));
            memcpy(dst + lo, src, (hi - lo) * sizeof(float));
            if (hi < span) memset(dst + hi, 0, (span - hi) * sizeof(float));
        }
        input_rows(rows, columns, span);  // along y: columns[i] = (Bᵀ d)[i] for every column
        for (int i = 0; i < 6; i++) {
            const float *src = columns[i];
            for (size_t t = 0; t <= tiles_x; t++) {  // one interleaved group: shuffles, not gathers
                p0[t] = src[4 * t];
                p1[t] = src[4 * t + 1];
                p2[t] = src[4 * t + 2];
                p3[t] = src[4 * t + 3];
            }
            for (int j = 0; j < 6; j++) outs[j] = v + (size_t)(i * 6 + j) * point_stride + c * ldv;
            input_rows(phases, outs, tiles_x);  // along x
        }
    }
}

// o[k][0..<n] = (Aᵀ m)[k] for six vectors m[0..5] of n values.
static inline void output_rows(const float *const m[6], float *const o[4], size_t n) {
    for (size_t x = 0; x < n; x++) {
        float m0 = m[0][x], m1 = m[1][x], m2 = m[2][x], m3 = m[3][x], m4 = m[4][x], m5 = m[5][x];
        float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
        o[0][x] = m0 + a + c;
        o[1][x] = b + 2 * d;
        o[2][x] = a + 4 * c;
        o[3][x] = b + 8 * d + m5;
    }
}

MULTIVERSION
void pk_winograd_output(const float *m, size_t ldm, size_t point_stride, size_t channels, size_t tile_row,
                        size_t tiles_x, size_t out_height, size_t out_width, const float *bias, float *output) {
    float *scratch = pk_scratch(28 * tiles_x, 1);
    float *ys[4][6], *xs[4];  // ys[o][j]: after the y transform; xs[p]: output column phase p
    for (int o = 0; o < 4; o++)
        for (int j = 0; j < 6; j++) ys[o][j] = scratch + (o * 6 + j) * tiles_x;
    for (int p = 0; p < 4; p++) xs[p] = scratch + (24 + p) * tiles_x;
    const float *in[6];
    float *outs[4];
    for (size_t c = 0; c < channels; c++) {
        for (int j = 0; j < 6; j++) {  // along y, for each column point j
            for (int i = 0; i < 6; i++) in[i] = m + (size_t)(i * 6 + j) * point_stride + c * ldm;
            for (int o = 0; o < 4; o++) outs[o] = ys[o][j];
            output_rows(in, outs, tiles_x);
        }
        float b = bias ? bias[c] : 0;
        for (int o = 0; o < 4; o++) {
            size_t y = tile_row * 4 + o;
            if (y >= out_height) break;
            output_rows((const float *const *)ys[o], xs, tiles_x);  // along x
            float *dst = output + (c * out_height + y) * out_width;
            size_t full = out_width / 4 < tiles_x ? out_width / 4 : tiles_x;
            for (size_t t = 0; t < full; t++)
                for (int p = 0; p < 4; p++) dst[4 * t + p] = xs[p][t] + b;
            for (size_t x = full * 4; x < out_width; x++) dst[x] = xs[x % 4][x / 4] + b;
        }
    }
}
