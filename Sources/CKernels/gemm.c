// The own GEMM: C = alpha · op(A) · op(B) + beta · C on float32 matrices, in one of two formats.
//   PK_BF16: operands rounded to bfloat16 (round to nearest even) while they are packed, products
//            of pairs by VDPBF16PS, summed in float32 (AVX512-BF16);
//   PK_F32:  float32 operands and FMA (AVX-512F) — OpenBLAS's own choice of kernels, or the one
//            an environment forces, can be narrower than the CPU.
//
// Blocked as in GotoBLAS/BLIS: for each KC x NC panel of B (packed once, kept in L2/L3) and each
// MC x KC block of A (packed, kept in L2), a 12 x 32 (or 12 x 16 at the right edge) micro-kernel
// walks the K dimension one packed element ("step") at a time. An element is 32 bits in both
// formats: a pair of bf16 (k = 2p, 2p+1; low half = even k) or one float (k = p). Packed layouts,
// per step p of the block's K:
//   A: for each 12-row micro-panel, row i's step p at i·AS + p (AS: steps in a K block), so rows
//      pack with contiguous stores and the kernel broadcasts from fixed offsets;
//   B: for each 32-column micro-panel, 32 elements (column j's), two zmm loads.
// Ragged edges are zero-padded in the packed panels, and the micro-kernel stores edge tiles with
// masks. Single-threaded: callers split the work over their own workers.

#include "ckernels.h"
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define PK_HAVE_X86 1
#define F32_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define PK_HAVE_X86 0
#endif

// Block sizes; -DPK_KC=… (bf16 values of K per block) -DPK_KC_F32=… -DPK_MC=… -DPK_NC=…
// override them for tuning experiments. A float32 B micro-panel of KC_F32 steps is 40 KiB; 320
// divides the UNet's K dimensions (multiples of 320 channels).
#ifndef PK_KC
#define PK_KC 384
#endif
#ifndef PK_KC_F32
#define PK_KC_F32 320
#endif
#ifndef PK_MC
#define PK_MC 240
#define PK_NC 3072
#endif
enum { MR = 12, NR = 32, MC = PK_MC, NC = PK_NC, AS_BF16 = PK_KC / 2, AS_F32 = PK_KC_F32 };

/// Values of K in a block.
static inline size_t kc_of(pk_format f) { return f == PK_F32 ? PK_KC_F32 : PK_KC; }
/// Packed elements along K for kc values.
static inline size_t steps(pk_format f, size_t kc) { return f == PK_F32 ? kc : (kc + 1) / 2; }
/// Steps in a whole K block: the row stride of an A micro-panel.
static inline size_t as_of(pk_format f) { return f == PK_F32 ? AS_F32 : AS_BF16; }

static int force_portable = 0;

void pk_gemm_force_portable(int on) { force_portable = on; }

int pk_avx512_supported(void) {
#if PK_HAVE_X86
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    return cached;
#else
    return 0;
#endif
}

int pk_gemm_fast(pk_format f) {
#if PK_HAVE_X86
    static int bf16 = -1;
    if (bf16 < 0) bf16 = pk_avx512_supported() && __builtin_cpu_supports("avx512bf16");
    return !force_portable && (f == PK_F32 ? pk_avx512_supported() : bf16);
#else
    (void)f;
    return 0;
#endif
}

static inline uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float value(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/// Round to nearest even, as VCVTNE2PS2BF16 does (NaN stays NaN).
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float pk_round_bf16(float x) { return from_bf16(to_bf16(x)); }

static inline uint32_t pair(float even, float odd) {
    return (uint32_t)to_bf16(even) | ((uint32_t)to_bf16(odd) << 16);
}

#if PK_HAVE_X86
/// Converts the first 32·⌊kc/32⌋ floats of `src` to consecutive bf16 pairs; returns the number of
/// pairs written.
BF16_TARGET
static size_t pack_pairs(const float *src, size_t kc, uint32_t *dst) {
    size_t p = 0;
    for (; 2 * p + 32 <= kc; p += 16) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 2 * p + 16), _mm512_loadu_ps(src + 2 * p));
        _mm512_storeu_si512(dst + p, (__m512i)v);
    }
    return p;
}

/// Converts the first 32·⌊kc/32⌋ floats of `src` to bf16 pairs, storing pair p at dst[p·stride];
/// returns the number of pairs written.
BF16_TARGET
static size_t pack_pairs_strided(const float *src, size_t kc, uint32_t *dst, size_t stride) {
    size_t p = 0;
    for (; 2 * p + 32 <= kc; p += 16) {
        uint32_t t[16];
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 2 * p + 16), _mm512_loadu_ps(src + 2 * p));
        _mm512_storeu_si512(t, (__m512i)v);
        for (int q = 0; q < 16; q++) dst[(p + q) * stride] = t[q];
    }
    return p;
}
#endif

/// Packs one line of kc operand values (consecutive along K, `step` floats apart), step p at
/// dst[p·stride]; in bf16 a missing odd partner is 0. A line that is not `valid` (padding past
/// the matrix edge) is written as zeros and `src` is not read.
static void pack_line(pk_format f, const float *src, size_t step, size_t kc, int valid, uint32_t *dst,
                      size_t stride) {
    size_t kp = steps(f, kc), p = 0;
    if (!valid) {
        for (; p < kp; p++) dst[p * stride] = 0;
        return;
    }
    if (f == PK_F32) {
        for (; p < kp; p++) dst[p * stride] = bits(src[p * step]);
        return;
    }
#if PK_HAVE_X86
    if (step == 1 && pk_gemm_fast(PK_BF16)) p = stride == 1 ? pack_pairs(src, kc, dst) : pack_pairs_strided(src, kc, dst, stride);
#endif
    for (; 2 * p + 1 < kc; p++) dst[p * stride] = pair(src[2 * p * step], src[(2 * p + 1) * step]);
    if (p < kp) dst[p * stride] = pair(src[2 * p * step], 0);
}

/// Packs rows [i0, i0+mc) x K [k0, k0+kc) of op(A) into MR-row micro-panels.
static void pack_a(pk_format f, const float *a, size_t lda, int trans, size_t i0, size_t mc, size_t k0,
                   size_t kc, uint32_t *dst) {
    size_t as = as_of(f);
    for (size_t ir = 0; ir < mc; ir += MR) {
        size_t rows = mc - ir < MR ? mc - ir : MR;
        for (size_t r = 0; r < MR; r++) {
            size_t i = i0 + ir + r;
            const float *line = trans ? a + k0 * lda + i : a + i * lda + k0;
            pack_line(f, line, trans ? lda : 1, kc, r < rows, dst + (ir + r) * as, 1);
        }
    }
}

/// Packs K [k0, k0+kc) x columns [j0, j0+nc) of op(B) into NR-column micro-panels.
static void pack_b_generic(pk_format f, const float *b, size_t ldb, int trans, size_t k0, size_t kc,
                           size_t j0, size_t nc, uint32_t *dst) {
    size_t kp = steps(f, kc);
    for (size_t jr = 0; jr < nc; jr += NR) {
        size_t cols = nc - jr < NR ? nc - jr : NR;
        for (size_t c = 0; c < NR; c++) {
            size_t j = j0 + jr + c;
            const float *line = trans ? b + j * ldb + k0 : b + k0 * ldb + j;
            pack_line(f, line, trans ? 1 : ldb, kc, c < cols, dst + jr * kp + c, NR);
        }
    }
}

/// Untransposed float32 B with whole 32-column micro-panels: each row of the block is 32
/// consecutive floats of the panel.
static void pack_b_rows_f32(const float *b, size_t ldb, size_t k0, size_t kc, size_t j0, size_t nc,
                            uint32_t *dst) {
    size_t full = nc / NR * NR;
    for (size_t jr = 0; jr < full; jr += NR)
        for (size_t p = 0; p < kc; p++) memcpy(dst + jr * kc + p * NR, b + (k0 + p) * ldb + j0 + jr, NR * 4);
    if (full < nc) pack_b_generic(PK_F32, b, ldb, 0, k0, kc, j0 + full, nc - full, dst + full * kc);
}

#if PK_HAVE_X86
/// Stores 32 pairs: bf16 column c of `even` and of `odd` side by side, for c = 0…31.
BF16_TARGET
static inline void store_interleaved(uint32_t *panel, __m512i even, __m512i odd) {
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                        39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    _mm512_storeu_si512(panel, _mm512_permutex2var_epi16(even, lo, odd));
    _mm512_storeu_si512(panel + 16, _mm512_permutex2var_epi16(even, hi, odd));
}

/// Untransposed B with whole 32-column micro-panels: two rows of 32 floats become one panel row
/// of 32 interleaved pairs.
BF16_TARGET
static void pack_b_rows(const float *b, size_t ldb, size_t k0, size_t kc, size_t j0, size_t nc,
                        uint32_t *dst) {
    size_t kp = (kc + 1) / 2;
    size_t full = nc / NR * NR;
    for (size_t jr = 0; jr < full; jr += NR) {
        uint32_t *panel = dst + jr * kp;
        for (size_t p = 0; p < kp; p++) {
            const float *r0 = b + (k0 + 2 * p) * ldb + j0 + jr;
            __m512i even = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r0 + 16), _mm512_loadu_ps(r0));
            __m512i odd = _mm512_setzero_si512();
            if (2 * p + 1 < kc) {
                const float *r1 = r0 + ldb;
                odd = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r1 + 16), _mm512_loadu_ps(r1));
            }
            store_interleaved(panel + p * NR, even, odd);
        }
    }
    if (full < nc) pack_b_generic(PK_BF16, b, ldb, 0, k0, kc, j0 + full, nc - full, dst + full * kp);
}

/// Writes an accumulator tile: C = alpha·acc (+ beta·C, or + C when accumulating a later K block).
F32_TARGET
static inline void store_row(float *c, __m512 acc, float alpha, float beta, int accumulate, __mmask16 m) {
    __m512 v = _mm512_mul_ps(acc, _mm512_set1_ps(alpha));
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c));
    else if (beta != 0) v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, c), _mm512_set1_ps(beta), v);
    _mm512_mask_storeu_ps(c, m, v);
}

/// Stores the first `rows` rows of a tile of 1 or 2 accumulators per row, clipped to `cols`.
/// Rows are indexed by constants only (an unrolled loop, the kernels inlined), so the
/// accumulators stay in registers: a loop to `rows` would make the compiler keep them in a
/// stack array, zeroed by a memset at every tile (2.5 % of a bf16 UNet call).
F32_TARGET
static inline __attribute__((always_inline)) void store_tile(float *c, size_t ldc, __m512 acc[][2], int halves,
                                                             size_t rows, size_t cols, float alpha, float beta,
                                                             int accumulate) {
    __mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    __mmask16 m1 = halves < 2 ? 0 : cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= rows) break;
        store_row(c + i * ldc, acc[i][0], alpha, beta, accumulate, m0);
        if (m1) store_row(c + i * ldc + 16, acc[i][1], alpha, beta, accumulate, m1);
    }
}

/// The bf16 micro-kernel: 12 rows by 32 columns (`halves` 2) or 16 (`halves` 1, for a right
/// edge of at most 16 columns: attention's 40- and 80-wide heads would otherwise waste most of a
/// 32-wide panel); `cols` and `rows` clip the stored tile.
BF16_TARGET
static inline __attribute__((always_inline)) void kernel_bf16(int halves, size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                               size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    __m512 acc[MR][2];
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (size_t p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
        __m512bh b1 = halves == 2 ? (__m512bh)_mm512_loadu_si512(b + 16) : b0;
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * AS_BF16]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            if (halves == 2) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
        a += 1;
        b += NR;
    }
    store_tile(c, ldc, acc, halves, rows, cols, alpha, beta, accumulate);
}

BF16_TARGET
static void kernel_bf16_12x32(size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                              size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    kernel_bf16(2, kp, a, b, c, ldc, rows, cols, alpha, beta, accumulate);
}

BF16_TARGET
static void kernel_bf16_12x16(size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                              size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    kernel_bf16(1, kp, a, b, c, ldc, rows, cols, alpha, beta, accumulate);
}

/// The float32 micro-kernel, shaped as the bf16 one: one FMA per row and half-panel per step.
F32_TARGET
static inline __attribute__((always_inline)) void kernel_f32(int halves, size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                              size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    const float *af = (const float *)a, *bf = (const float *)b;
    __m512 acc[MR][2];
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (size_t p = 0; p < kp; p++) {
        __m512 b0 = _mm512_loadu_ps(bf);
        __m512 b1 = halves == 2 ? _mm512_loadu_ps(bf + 16) : b0;
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(af[i * AS_F32]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (halves == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        af += 1;
        bf += NR;
    }
    store_tile(c, ldc, acc, halves, rows, cols, alpha, beta, accumulate);
}

F32_TARGET
static void kernel_f32_12x32(size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                             size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    kernel_f32(2, kp, a, b, c, ldc, rows, cols, alpha, beta, accumulate);
}

F32_TARGET
static void kernel_f32_12x16(size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                             size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    kernel_f32(1, kp, a, b, c, ldc, rows, cols, alpha, beta, accumulate);
}
#endif

/// Portable micro-kernel with the same arithmetic as the vector ones (bf16: products of rounded
/// values summed in float32), for CPUs without them.
static void kernel_portable(pk_format f, size_t kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc,
                            size_t rows, size_t cols, float alpha, float beta, int accumulate) {
    size_t as = as_of(f);
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            float s = 0;
            for (size_t p = 0; p < kp; p++) {
                uint32_t x = a[i * as + p], y = b[p * NR + j];
                if (f == PK_F32) {
                    s += value(x) * value(y);
                } else {
                    s += from_bf16((uint16_t)x) * from_bf16((uint16_t)y);
                    s += from_bf16((uint16_t)(x >> 16)) * from_bf16((uint16_t)(y >> 16));
                }
            }
            float *out = c + i * ldc + j;
            float v = alpha * s;
            if (accumulate) v += *out;
            else if (beta != 0) v += beta * *out;
            *out = v;
        }
    }
}

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/// Packs op(B)'s K block [pc, pc+kc) x column block [jc, jc+nc).
static void pack_b(pk_format f, const float *b, size_t ldb, int trans_b, size_t pc, size_t kc, size_t jc,
                   size_t nc, uint32_t *dst) {
    if (f == PK_F32 && !trans_b) { pack_b_rows_f32(b, ldb, pc, kc, jc, nc, dst); return; }
#if PK_HAVE_X86
    if (f == PK_BF16 && pk_gemm_fast(PK_BF16) && !trans_b) { pack_b_rows(b, ldb, pc, kc, jc, nc, dst); return; }
#endif
    pack_b_generic(f, b, ldb, trans_b, pc, kc, jc, nc, dst);
}

/// A whole packed op(B) stores its (column block, K block) panels one after another; K blocks
/// and NC being multiples of 2 and NR, the block at (jc, pc) starts here.
static size_t packed_offset(pk_format f, size_t k, size_t jc, size_t pc, size_t nc) {
    return steps(f, k) * jc + steps(f, pc) * round_up(nc, NR);
}

size_t pk_packed_b_count(pk_format f, size_t k, size_t n) { return steps(f, k) * round_up(n, NR); }

void pk_pack_b(pk_format f, int trans_b, size_t k, size_t n, const float *b, size_t ldb, uint32_t *dst) {
    size_t kcMax = kc_of(f);
    for (size_t jc = 0; jc < n; jc += NC) {
        size_t nc = n - jc < NC ? n - jc : NC;
        for (size_t pc = 0; pc < k; pc += kcMax)
            pack_b(f, b, ldb, trans_b, pc, k - pc < kcMax ? k - pc : kcMax, jc, nc, dst + packed_offset(f, k, jc, pc, nc));
    }
}

/// A whole packed op(A) stores, for each K block, the MC-row blocks' micro-panels one after
/// another (MC being a multiple of MR, only the last block is short): the block at (ic, pc)
/// starts here, laid out as `pack_a` writes it.
static size_t packed_a_offset(pk_format f, size_t m, size_t ic, size_t pc) {
    return pc / kc_of(f) * as_of(f) * round_up(m, MR) + ic * as_of(f);
}

size_t pk_packed_a_count(pk_format f, size_t m, size_t k) {
    return (k + kc_of(f) - 1) / kc_of(f) * as_of(f) * round_up(m, MR);
}

void pk_pack_a(pk_format f, int trans_a, size_t m, size_t k, const float *a, size_t lda, uint32_t *dst) {
    size_t kcMax = kc_of(f);
    for (size_t pc = 0; pc < k; pc += kcMax)
        for (size_t ic = 0; ic < m; ic += MC)
            pack_a(f, a, lda, trans_a, ic, m - ic < MC ? m - ic : MC, pc, k - pc < kcMax ? k - pc : kcMax,
                   dst + packed_a_offset(f, m, ic, pc));
}

void pk_unpack_a(pk_format f, size_t m, size_t k, const uint32_t *src, float *a, size_t lda) {
    size_t kcMax = kc_of(f), as = as_of(f);
    for (size_t pc = 0; pc < k; pc += kcMax)
        for (size_t ic = 0; ic < m; ic += MC) {
            const uint32_t *block = src + packed_a_offset(f, m, ic, pc);
            size_t mc = m - ic < MC ? m - ic : MC, kc = k - pc < kcMax ? k - pc : kcMax;
            for (size_t r = 0; r < mc; r++) {
                const uint32_t *line = block + r * as;
                float *dst = a + (ic + r) * lda + pc;
                if (f == PK_F32)
                    for (size_t i = 0; i < kc; i++) memcpy(dst + i, line + i, sizeof(float));
                else
                    for (size_t i = 0; i < kc; i++)
                        dst[i] = from_bf16((uint16_t)(i % 2 ? line[i / 2] >> 16 : line[i / 2] & 0xffff));
            }
        }
}

/// An implicit im2col matrix: column j is output pixel (r0 + j / out_width, j % out_width) of one
/// image, row k is input channel k / (kh·kw) at kernel offset ((k / kw) % kh, k % kw).
typedef struct {
    const float *input;
    size_t height, width, kh, kw, stride, pad_top, pad_left, out_width, r0;
} conv_geometry;

static inline float conv_element(const conv_geometry *g, size_t k, size_t j) {
    size_t taps = g->kh * g->kw;
    size_t ch = k / taps, ky = (k / g->kw) % g->kh, kx = k % g->kw;
    long iy = (long)((g->r0 + j / g->out_width) * g->stride + ky) - (long)g->pad_top;
    long ix = (long)((j % g->out_width) * g->stride + kx) - (long)g->pad_left;
    if (iy < 0 || iy >= (long)g->height || ix < 0 || ix >= (long)g->width) return 0;
    return g->input[(ch * g->height + (size_t)iy) * g->width + (size_t)ix];
}

#if PK_HAVE_X86
/// Row k of the implicit matrix at 32 consecutive columns of one output row (stride 1), as two
/// halves: a masked load of the input row, zero where the kernel reaches into the padding.
F32_TARGET
static inline void conv_row(const conv_geometry *g, size_t k, size_t oy, size_t ox0, __m512 *v0, __m512 *v1) {
    size_t taps = g->kh * g->kw;
    size_t ch = k / taps, ky = (k / g->kw) % g->kh, kx = k % g->kw;
    long iy = (long)(oy + ky) - (long)g->pad_top;
    long start = (long)(ox0 + kx) - (long)g->pad_left;
    long lo = start < 0 ? -start : 0, hi = (long)g->width - start;
    if (hi > 32) hi = 32;
    if (iy < 0 || iy >= (long)g->height || hi <= lo) {
        *v0 = *v1 = _mm512_setzero_ps();
        return;
    }
    uint64_t bits = (hi >= 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
    // Masked-off lanes are never read (AVX-512 suppresses their faults), so the address may
    // point before the row.
    const float *src = g->input + (ch * g->height + (size_t)iy) * g->width;
    *v0 = _mm512_maskz_loadu_ps((__mmask16)bits, src + start);
    *v1 = _mm512_maskz_loadu_ps((__mmask16)(bits >> 16), src + start + 16);
}

BF16_TARGET
static inline __m512i conv_row_bf16(const conv_geometry *g, size_t k, size_t oy, size_t ox0) {
    __m512 v0, v1;
    conv_row(g, k, oy, ox0, &v0, &v1);
    return (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
}

/// One whole 32-column bf16 panel of the implicit matrix (stride 1, inside one output row).
BF16_TARGET
static void pack_conv_panel_bf16(const conv_geometry *g, size_t pc, size_t kc, size_t oy, size_t ox0, uint32_t *panel) {
    size_t kp = (kc + 1) / 2;
    for (size_t p = 0; p < kp; p++) {
        __m512i even = conv_row_bf16(g, pc + 2 * p, oy, ox0);
        __m512i odd = 2 * p + 1 < kc ? conv_row_bf16(g, pc + 2 * p + 1, oy, ox0) : _mm512_setzero_si512();
        store_interleaved(panel + p * NR, even, odd);
    }
}

/// The same panel in float32.
F32_TARGET
static void pack_conv_panel_f32(const conv_geometry *g, size_t pc, size_t kc, size_t oy, size_t ox0, uint32_t *panel) {
    for (size_t p = 0; p < kc; p++) {
        __m512 v0, v1;
        conv_row(g, pc + p, oy, ox0, &v0, &v1);
        _mm512_storeu_ps((float *)(panel + p * NR), v0);
        _mm512_storeu_ps((float *)(panel + p * NR + 16), v1);
    }
}
#endif

/// Packs K block [pc, pc+kc) x column block [jc, jc+nc) of the implicit matrix, as `pack_b`.
static void pack_conv(pk_format f, const conv_geometry *g, size_t pc, size_t kc, size_t jc, size_t nc,
                      uint32_t *dst) {
    size_t kp = steps(f, kc);
    for (size_t jr = 0; jr < nc; jr += NR) {
        size_t cols = nc - jr < NR ? nc - jr : NR;
        uint32_t *panel = dst + jr * kp;
        size_t j0 = jc + jr, oy = g->r0 + j0 / g->out_width, ox0 = j0 % g->out_width;
#if PK_HAVE_X86
        if (pk_gemm_fast(f) && g->stride == 1 && cols == NR && ox0 + NR <= g->out_width) {
            if (f == PK_F32) pack_conv_panel_f32(g, pc, kc, oy, ox0, panel);
            else pack_conv_panel_bf16(g, pc, kc, oy, ox0, panel);
            continue;
        }
#endif
        for (size_t p = 0; p < kp; p++) {
            for (size_t c = 0; c < NR; c++) {
                uint32_t *out = panel + p * NR + c;
                if (c >= cols) { *out = 0; continue; }
                if (f == PK_F32) { *out = bits(conv_element(g, pc + p, j0 + c)); continue; }
                float e = conv_element(g, pc + 2 * p, j0 + c);
                float o = 2 * p + 1 < kc ? conv_element(g, pc + 2 * p + 1, j0 + c) : 0;
                *out = pair(e, o);
            }
        }
    }
}

/// The blocked product; op(A) comes either from `a` (packed here, block by block) or, when
/// `packed_a` is set, from a whole packed op(A); op(B) from `b`, from the implicit matrix of
/// `conv`, or, when `prepacked` is set, from a whole packed op(B).
static void gemm(pk_format f, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const float *a, size_t lda, const uint32_t *packed_a, const float *b, size_t ldb,
                 const uint32_t *prepacked, const conv_geometry *conv, float beta, float *c, size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return;
    }
    int fast = pk_gemm_fast(f);
    size_t kcMax = kc_of(f), as = as_of(f), kpMax = steps(f, kcMax);
    // Per-thread buffers that only grow (slots 2 and 3; callers hold 0 and 1 around their GEMMs).
    uint32_t *pb = prepacked ? NULL : (uint32_t *)pk_scratch(kpMax * (NC + NR), 3);
    uint32_t *pa = packed_a ? NULL : (uint32_t *)pk_scratch(as * (MC + MR), 2);
    for (size_t jc = 0; jc < n; jc += NC) {
        size_t nc = n - jc < NC ? n - jc : NC;
        for (size_t pc = 0; pc < k; pc += kcMax) {
            size_t kc = k - pc < kcMax ? k - pc : kcMax;
            size_t kp = steps(f, kc);
            int accumulate = pc > 0;
            const uint32_t *panel = prepacked ? prepacked + packed_offset(f, k, jc, pc, nc) : pb;
            if (conv) pack_conv(f, conv, pc, kc, jc, nc, pb);
            else if (!prepacked) pack_b(f, b, ldb, trans_b, pc, kc, jc, nc, pb);
            for (size_t ic = 0; ic < m; ic += MC) {
                size_t mc = m - ic < MC ? m - ic : MC;
                const uint32_t *block = packed_a ? packed_a + packed_a_offset(f, m, ic, pc) : pa;
                if (!packed_a) pack_a(f, a, lda, trans_a, ic, mc, pc, kc, pa);
                for (size_t jr = 0; jr < nc; jr += NR) {
                    size_t cols = nc - jr < NR ? nc - jr : NR;
                    const uint32_t *bp = panel + jr * kp;
                    for (size_t ir = 0; ir < mc; ir += MR) {
                        size_t rows = mc - ir < MR ? mc - ir : MR;
                        const uint32_t *ap = block + ir * as;
                        float *ct = c + (ic + ir) * ldc + jc + jr;
#if PK_HAVE_X86
                        if (fast && f == PK_F32) {
                            if (cols <= 16) kernel_f32_12x16(kp, ap, bp, ct, ldc, rows, cols, alpha, beta, accumulate);
                            else kernel_f32_12x32(kp, ap, bp, ct, ldc, rows, cols, alpha, beta, accumulate);
                            continue;
                        }
                        if (fast) {
                            if (cols <= 16) kernel_bf16_12x16(kp, ap, bp, ct, ldc, rows, cols, alpha, beta, accumulate);
                            else kernel_bf16_12x32(kp, ap, bp, ct, ldc, rows, cols, alpha, beta, accumulate);
                            continue;
                        }
#endif
                        kernel_portable(f, kp, ap, bp, ct, ldc, rows, cols, alpha, beta, accumulate);
                    }
                }
            }
        }
    }
}

void pk_gemm(pk_format f, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
             const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    gemm(f, trans_a, trans_b, m, n, k, alpha, a, lda, NULL, b, ldb, NULL, NULL, beta, c, ldc);
}

void pk_gemm_packed_a(pk_format f, int trans_b, size_t m, size_t n, size_t k, float alpha,
                      const uint32_t *packed_a, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    gemm(f, 0, trans_b, m, n, k, alpha, NULL, 0, packed_a, b, ldb, NULL, NULL, beta, c, ldc);
}

void pk_gemm_packed_b(pk_format f, int trans_a, size_t m, size_t n, size_t k, float alpha, const float *a,
                      size_t lda, const uint32_t *packed_b, float beta, float *c, size_t ldc) {
    gemm(f, trans_a, 0, m, n, k, alpha, a, lda, NULL, NULL, 0, packed_b, NULL, beta, c, ldc);
}

void pk_conv(pk_format f, const float *input, size_t channels, size_t height, size_t width,
             const float *weight, const uint32_t *packed_weight, size_t out_channels, size_t kh, size_t kw,
             size_t stride, size_t pad_top, size_t pad_left, size_t out_width, size_t first_row, size_t rows,
             float *output, size_t ldo) {
    conv_geometry g = {input, height, width, kh, kw, stride, pad_top, pad_left, out_width, first_row};
    size_t k = channels * kh * kw;
    gemm(f, 0, 0, out_channels, rows * out_width, k, 1, weight, k, packed_weight, NULL, 0, NULL, &g, 0, output, ldo);
}
