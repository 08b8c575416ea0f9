import CKernels
import COpenBLAS

/// Row-major single-precision GEMM: C = alpha · op(A) · op(B) + beta · C, on the own AVX-512
/// kernel when `Compute.ownFloat32GEMM`, else OpenBLAS. `lda`, `ldb`, `ldc` are row strides, so
/// strided sub-matrices (one head of an attention projection, a block of output rows) need no
/// copy. Float32 whatever `Compute.precision` is.
@inline(__always)
public func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                  alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                  b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if Compute.ownFloat32GEMM {
        ownGEMM(PK_F32, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// C = alpha · W · op(B) + beta · C for a weight packed as the left operand (W is
/// `packed.rows` x `packed.columns`), in the weight's format; split by columns over the workers
/// unless the caller already runs one product per worker.
public func gemm(packed: PackedWeight, transB: Bool = false, n: Int, alpha: Float = 1,
                 b: UnsafePointer<Float>, ldb: Int, beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    precondition(packed.operand == .left, "gemm(packed:): the weight is packed as the right operand")
    let (m, k) = (packed.rows, packed.columns)
    let workers = Compute.singleThreadedBLAS ? 1 : Compute.threads
    guard workers > 1 && m * n * k >= 1 << 21 && n >= 64 * workers else {
        pk_gemm_packed_a(packed.format, transB ? 1 : 0, m, n, k, alpha, packed.panels, b, ldb, beta, c, ldc)
        return
    }
    Compute.withSingleThreadedBLAS {
        Compute.parallelFor(workers) { part in
            let j0 = (n / 32 * part / workers) * 32, j1 = part == workers - 1 ? n : (n / 32 * (part + 1) / workers) * 32
            pk_gemm_packed_a(packed.format, transB ? 1 : 0, m, j1 - j0, k, alpha, packed.panels,
                             b + (transB ? j0 * ldb : j0), ldb, beta, c + j0, ldc)
        }
    }
}

/// Row-major GEMM at `Compute.precision`: float32 as `sgemm`, bf16 on the own kernel.
@inline(__always)
public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    guard Compute.precision == .bf16 else {
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
              b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    ownGEMM(PK_BF16, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
            b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
}

/// The own GEMM in `format`, split over the workers unless the caller already runs one product
/// per worker or the product is small.
func ownGEMM(_ format: pk_format, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
             c: UnsafeMutablePointer<Float>, ldc: Int) {
    let workers = Compute.singleThreadedBLAS ? 1 : Compute.threads
    guard workers > 1 && m * n * k >= 1 << 21 else {
        pk_gemm(format, transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    }
    // Split the longer side: each worker packs all of the other operand, so that one should be
    // the smaller.
    let byColumns = n >= m && n >= 64 * workers
    Compute.withSingleThreadedBLAS {
        Compute.parallelFor(workers) { part in
            if byColumns {
                let j0 = (n / 32 * part / workers) * 32, j1 = part == workers - 1 ? n : (n / 32 * (part + 1) / workers) * 32
                pk_gemm(format, transA ? 1 : 0, transB ? 1 : 0, m, j1 - j0, k, alpha, a, lda,
                        b + (transB ? j0 * ldb : j0), ldb, beta, c + j0, ldc)
            } else {
                let i0 = m * part / workers, i1 = m * (part + 1) / workers
                pk_gemm(format, transA ? 1 : 0, transB ? 1 : 0, i1 - i0, n, k, alpha, a + (transA ? i0 : i0 * lda), lda,
                        b, ldb, beta, c + i0 * ldc, ldc)
            }
        }
    }
}
