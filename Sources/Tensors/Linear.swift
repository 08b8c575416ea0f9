/// y = x · Wᵀ + b over the last dimension, as `torch.nn.Linear`.
/// `weight` is [out, in] (PyTorch layout); `x` is [..., in]; the result is [..., out].
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
    precondition(x.shape.last == inFeatures, "linear: input \(x.shape) vs weight \(weight.shape)")
    let rows = x.count / inFeatures
    var outShape = x.shape
    outShape[outShape.count - 1] = outFeatures
    return Tensor(uninitializedShape: outShape) { out in
        x.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { wp in
                let workers = Compute.threads
                guard workers > 1 && rows >= 64 * workers else {
                    gemm(transB: true, m: rows, n: outFeatures, k: inFeatures,
                         a: xp.baseAddress!, lda: inFeatures, b: wp.baseAddress!, ldb: inFeatures,
                         c: out.baseAddress!, ldc: outFeatures)
                    return
                }
                // Row blocks on separate workers with single-threaded GEMMs avoid OpenBLAS's
                // per-call thread synchronisation, which dominates the many mid-sized products.
                Compute.withSingleThreadedBLAS {
                    Compute.parallelFor(workers) { part in
                        let r0 = rows * part / workers, r1 = rows * (part + 1) / workers
                        gemm(transB: true, m: r1 - r0, n: outFeatures, k: inFeatures,
                             a: xp.baseAddress! + r0 * inFeatures, lda: inFeatures,
                             b: wp.baseAddress!, ldb: inFeatures,
                             c: out.baseAddress! + r0 * outFeatures, ldc: outFeatures)
                    }
                }
            }
        }
        if let bias { addRowBias(out.baseAddress!, rows: rows, columns: outFeatures, bias: bias) }
    }
}

/// Adds `bias[j]` to every row of a [rows, columns] matrix.
@inline(__always)
func addRowBias(_ p: UnsafeMutablePointer<Float>, rows: Int, columns: Int, bias: Tensor) {
    bias.withUnsafeBufferPointer { bp in
        let b = bp.baseAddress!
        Compute.parallelFor(rows, minimumPerThread: 64) { r in
            let row = p + r * columns
            for j in 0..<columns { row[j] += b[j] }
        }
    }
}
