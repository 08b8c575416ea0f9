#ifndef PANORAMA_CKERNELS_H
#define PANORAMA_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Hot element-wise loops in C so they vectorise (Swift's baseline x86-64 target does not);
/// each has AVX-512, AVX2 and baseline versions chosen at run time.

/// In-place softmax of `rows` rows of `columns` floats. Row r may attend to the first
/// `valid0 + r` columns when `valid0` > 0 (causal masking; the rest become 0); all columns
/// when `valid0` == 0.
void pk_softmax_rows(float *p, size_t rows, size_t columns, size_t valid0);

/// dst[c·ld_dst + r] = src[r·ld_src + c] for r < rows, c < columns (AVX-512 16x16 blocks where
/// the CPU has them).
void pk_transpose(const float *src, size_t ld_src, float *dst, size_t ld_dst, size_t rows, size_t columns);

/// One key block of attention with an online softmax (scores never held for all keys at once).
/// `s` holds rows x columns scaled scores of the block and becomes exp(s − m'), where m' is each
/// row's running maximum over the blocks so far, kept in `m`; `l` keeps each row's running sum of
/// exponentials. The output rows accumulated from earlier blocks (`o`, d floats each, stride
/// `ldo`) are rescaled to the new maximum. Pass `o` = NULL for the first block, which starts m
/// and l afresh and has no output to rescale.
void pk_softmax_online(float *s, size_t rows, size_t columns, float *m, float *l, float *o, size_t ldo,
                       size_t d);

/// Divides each of `rows` rows of d floats (stride `ldo`) by its l[r]: the end of the online
/// softmax.
void pk_divide_rows(float *o, size_t ldo, const float *l, size_t rows, size_t d);

/// y = x * sigmoid(x), in place.
void pk_silu(float *p, size_t n);

/// y = (x * scale + shift), optionally followed by SiLU, for one channel plane.
void pk_scale_shift(const float *x, float *y, size_t n, float scale, float shift, int silu);

/// GEGLU: for each of `rows` rows of 2·d inputs [hidden, gate], out = hidden · gelu(gate), with
/// exact (erf) GELU through a polynomial erf accurate to 1.5e-7.
void pk_geglu(const float *x, float *out, size_t rows, size_t d);

/// A per-thread scratch buffer of at least `count` floats that only grows, so hot loops neither
/// allocate nor page-fault. `slot` 0–4 picks one of five independent buffers (0, 1 and 4 for
/// kernels' own scratch, 2 and 3 for the own GEMM's packed operands). The contents are
/// undefined and valid until the same thread asks for the same slot again.
float *pk_scratch(size_t count, int slot);

/// glibc: keep freed blocks up to 32 MiB in the heap instead of unmapping them (no-op elsewhere).
void pk_retain_freed_memory(void);

/// x rounded to the nearest bfloat16 (ties to even), returned as float.
float pk_round_bf16(float x);

/// Element format of the own GEMM (gemm.c): how operands are packed and multiplied.
typedef enum pk_format {
    /// Operands rounded to bfloat16 (nearest even), products summed in float32.
    PK_BF16 = 0,
    /// float32 operands and products.
    PK_F32 = 1
} pk_format;

/// 1 when this CPU has AVX-512 F, BW, DQ and VL.
int pk_avx512_supported(void);

/// 1 when the GEMM's vector kernels run for format `f` (PK_F32: AVX-512; PK_BF16: AVX512-BF16's
/// VDPBF16PS). Otherwise a portable kernel with the same arithmetic runs, much slower.
int pk_gemm_fast(pk_format f);

/// Tests: makes `pk_gemm_fast` report 0 while `on` is non-zero.
void pk_gemm_force_portable(int on);

/// Row-major C = alpha · op(A) · op(B) + beta · C in format `f`. op(A) is m x k, op(B) is k x n;
/// `trans_a` / `trans_b` mean the stored matrix is the transpose. Single-threaded. C is not read
/// when beta is 0.
void pk_gemm(pk_format f, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
             const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);

/// Number of uint32 values a packed k x n op(B) occupies.
size_t pk_packed_b_count(pk_format f, size_t k, size_t n);

/// Packs op(B) (k x n) once, for products that reuse it (attention's keys and values, weights).
void pk_pack_b(pk_format f, int trans_b, size_t k, size_t n, const float *b, size_t ldb, uint32_t *dst);

/// `pk_gemm` with op(B) already packed by `pk_pack_b` in the same format for the same k and n.
void pk_gemm_packed_b(pk_format f, int trans_a, size_t m, size_t n, size_t k, float alpha, const float *a,
                      size_t lda, const uint32_t *packed_b, float beta, float *c, size_t ldc);

/// Number of uint32 values a packed m x k op(A) occupies.
size_t pk_packed_a_count(pk_format f, size_t m, size_t k);

/// Packs op(A) (m x k) once, for products that reuse it (layer weights, packed at load).
void pk_pack_a(pk_format f, int trans_a, size_t m, size_t k, const float *a, size_t lda, uint32_t *dst);

/// The values of an A packed by `pk_pack_a` (m x k, not transposed), written row-major with row
/// stride lda: exactly the rounded values the products use.
void pk_unpack_a(pk_format f, size_t m, size_t k, const uint32_t *src, float *a, size_t lda);

/// `pk_gemm` with op(A) already packed by `pk_pack_a` in the same format for the same m and k.
void pk_gemm_packed_a(pk_format f, int trans_b, size_t m, size_t n, size_t k, float alpha,
                      const uint32_t *packed_a, const float *b, size_t ldb, float beta, float *c, size_t ldc);

/// Convolution of one image without an im2col buffer: output rows [first_row, first_row + rows)
/// of every output channel, written at output + co·ldo + (y − first_row)·out_width + x. `weight`
/// is [out_channels, channels·kh·kw], or NULL when `packed_weight` holds it packed by
/// `pk_pack_a` in the same format; input [channels, height, width]; zero padding of pad_top /
/// pad_left (the bottom and right follow from out_width and the number of rows). No bias.
/// Single-threaded.
void pk_conv(pk_format f, const float *input, size_t channels, size_t height, size_t width,
             const float *weight, const uint32_t *packed_weight, size_t out_channels, size_t kh, size_t kw,
             size_t stride, size_t pad_top, size_t pad_left, size_t out_width, size_t first_row, size_t rows,
             float *output, size_t ldo);

/// Winograd F(4x4, 3x3) convolution (winograd.c): a 3x3 stride-1 convolution as 36 matrix
/// products, one per point α of the 6x6 transformed tile, U[α] (out x in) · V[α] (in x tiles).
/// Tiles are 4x4 output pixels; a row of tiles is `tiles_x` = ceil(out_width / 4) of them.

/// Transformed weights of output channels [first, first + count): weight is [out, in, 3, 3];
/// writes u[α · out·in + co · in + ci].
void pk_winograd_weights(const float *weight, size_t out_channels, size_t channels, size_t first,
                         size_t count, float *u);

/// Transformed input of one row of tiles, all `channels` of one image [channels, height, width]
/// with zero padding pad_top / pad_left: writes v[α · point_stride + c · ldv + t] for the
/// tiles t of the row. Uses scratch slot 1.
void pk_winograd_input(const float *input, size_t channels, size_t height, size_t width, size_t pad_top,
                       size_t pad_left, size_t tile_row, size_t tiles_x, float *v, size_t ldv,
                       size_t point_stride);

/// Inverse transform of one row of tiles: reads m[α · point_stride + c · ldm + t], writes the
/// row's output pixels (cropped to out_height x out_width) of `channels` channels of one image
/// [channels, out_height, out_width], plus bias[c] when bias is not NULL. Uses scratch slot 1.
void pk_winograd_output(const float *m, size_t ldm, size_t point_stride, size_t channels, size_t tile_row,
                        size_t tiles_x, size_t out_height, size_t out_width, const float *bias, float *output);

#endif
