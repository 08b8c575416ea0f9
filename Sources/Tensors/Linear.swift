import CKernels

/// y = x · Wᵀ + b over the last dimension, as `torch.nn.Linear`.
/// `weight` is [out, in] (PyTorch layout); `x` is [..., in]; the result is [..., out].
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    linear(x, weight: .float32(weight), bias: bias)
}

/// `linear` with a float32 or a packed weight; a packed one computes in its own format.
public func linear(_ x: Tensor, weight layerWeight: LayerWeight, bias: Tensor?) -> Tensor {
    let weight = layerWeight.shape
    let inFeatures = weight[1], outFeatures = weight[0]
    precondition(x.shape.last == inFeatures, "linear: input \(x.shape) vs weight \(weight)")
    let rows = x.count / inFeatures
    var outShape = x.shape
    outShape[outShape.count - 1] = outFeatures
    return Tensor(uninitializedShape: outShape) { out in
        x.withUnsafeBufferPointer { xp in
            layerWeight.withFloat32Pointer { weightPointer in
                /// Rows [r0, r1) of the result.
                func product(_ r0: Int, _ r1: Int) {
                    let a = xp.baseAddress! + r0 * inFeatures, c = out.baseAddress! + r0 * outFeatures
                    if case .packed(let packed) = layerWeight {
                        pk_gemm_packed_b(packed.format, 0, r1 - r0, outFeatures, inFeatures, 1, a, inFeatures,
                                         packed.panels, 0, c, outFeatures)
                    } else {
                        gemm(transB: true, m: r1 - r0, n: outFeatures, k: inFeatures, a: a, lda: inFeatures,
                             b: weightPointer!, ldb: inFeatures, c: c, ldc: outFeatures)
                    }
                }
                let workers = Compute.threads
                guard workers > 1 && rows >= 64 * workers else {
                    product(0, rows)
                    return
                }
                // Row blocks on separate workers with single-threaded GEMMs avoid OpenBLAS's
                // per-call thread synchronisation, which dominates the many mid-sized products.
                Compute.withSingleThreadedBLAS {
                    Compute.parallelFor(workers) { part in
                        product(rows * part / workers, rows * (part + 1) / workers)
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
