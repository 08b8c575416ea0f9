import CKernels
import Foundation

/// Activation applied in the same pass as a normalisation, saving a trip through memory.
public enum FusedActivation: Sendable {
    case none, silu
}

/// `torch.nn.GroupNorm` over NCHW (or any [N, C, ...]) input, optionally followed by SiLU.
/// Statistics are accumulated in double precision, so the result does not depend on the
/// summation order (tiling and threading give identical output).
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float,
                      activation: FusedActivation = .none) -> Tensor {
    let n = x.shape[0], c = x.shape[1]
    precondition(c % groups == 0, "groupNorm: \(c) channels are not divisible into \(groups) groups")
    let spatial = x.count / (n * c)
    let perGroup = c / groups
    let groupSize = perGroup * spatial
    return Tensor(uninitializedShape: x.shape) { out in
        x.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { gp in
                bias.withUnsafeBufferPointer { bp in
                    let src = xp.baseAddress!, dst = out.baseAddress!
                    let gamma = gp.baseAddress!, beta = bp.baseAddress!
                    Compute.parallelFor(n * groups) { ng in
                        let base = ng * groupSize
                        let (mean, rstd) = meanAndInverseStd(src + base, count: groupSize, eps: eps)
                        let firstChannel = (ng % groups) * perGroup
                        for cc in 0..<perGroup {
                            let scale = gamma[firstChannel + cc] * rstd
                            let shift = beta[firstChannel + cc] - mean * scale
                            let s = src + base + cc * spatial, d = dst + base + cc * spatial
                            pk_scale_shift(s, d, spatial, scale, shift, activation == .silu ? 1 : 0)
                        }
                    }
                }
            }
        }
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
    let d = x.shape.last!
    let rows = x.count / d
    return Tensor(uninitializedShape: x.shape) { out in
        x.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { gp in
                bias.withUnsafeBufferPointer { bp in
                    let src = xp.baseAddress!, dst = out.baseAddress!
                    let gamma = gp.baseAddress!, beta = bp.baseAddress!
                    Compute.parallelFor(rows, minimumPerThread: 16) { r in
                        let s = src + r * d, o = dst + r * d
                        let (mean, rstd) = meanAndInverseStd(s, count: d, eps: eps)
                        for i in 0..<d { o[i] = (s[i] - mean) * rstd * gamma[i] + beta[i] }
                    }
                }
            }
        }
    }
}

/// Mean and 1/sqrt(biased variance + eps), accumulated in Double.
@inline(__always)
func meanAndInverseStd(_ p: UnsafePointer<Float>, count: Int, eps: Float) -> (Float, Float) {
    var sum = 0.0
    for i in 0..<count { sum += Double(p[i]) }
    let mean = sum / Double(count)
    var sq = 0.0
    for i in 0..<count {
        let dv = Double(p[i]) - mean
        sq += dv * dv
    }
    let variance = sq / Double(count)
    return (Float(mean), Float(1 / (variance + Double(eps)).squareRoot()))
}
