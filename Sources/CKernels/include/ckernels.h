#ifndef PANORAMA_CKERNELS_H
#define PANORAMA_CKERNELS_H

#include <stddef.h>

/// Hot element-wise loops in C so they vectorise (Swift's baseline x86-64 target does not);
/// each has AVX-512, AVX2 and baseline versions chosen at run time.

/// In-place softmax of `rows` rows of `columns` floats. Row r may attend to the first
/// `valid0 + r` columns when `valid0` > 0 (causal masking; the rest become 0); all columns
/// when `valid0` == 0.
void pk_softmax_rows(float *p, size_t rows, size_t columns, size_t valid0);

/// y = x * sigmoid(x), in place.
void pk_silu(float *p, size_t n);

/// y = (x * scale + shift), optionally followed by SiLU, for one channel plane.
void pk_scale_shift(const float *x, float *y, size_t n, float scale, float shift, int silu);

/// GEGLU: for each of `rows` rows of 2·d inputs [hidden, gate], out = hidden · gelu(gate), with
/// exact (erf) GELU through a polynomial erf accurate to 1.5e-7.
void pk_geglu(const float *x, float *out, size_t rows, size_t d);

#endif
