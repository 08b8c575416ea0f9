import CKernels

/// Per-group sums of a [1, C, H, W] feature map that is produced in tiles, so that a GroupNorm
/// can normalise every tile with the statistics of the whole map (what a whole-image pass
/// computes) instead of each tile's own.
///
/// Sums are kept in Double: a 512x4096 map has millions of elements per group, and the variance
/// is taken as E[x²] − E[x]², which needs the extra precision.
public struct GroupStatistics: Sendable, Equatable {
    public let groups: Int
    public private(set) var sum: [Double]
    public private(set) var sumOfSquares: [Double]
    /// Elements accumulated per group.
    public private(set) var count: Int

    public init(groups: Int) {
        self.groups = groups
        sum = [Double](repeating: 0, count: groups)
        sumOfSquares = [Double](repeating: 0, count: groups)
        count = 0
    }

    /// Statistics saved earlier (a resumed tiled pass continues its partial sums bit for bit);
    /// nil when the arrays do not have `groups` entries or a sum is not finite.
    public init?(groups: Int, sum: [Double], sumOfSquares: [Double], count: Int) {
        guard groups > 0, sum.count == groups, sumOfSquares.count == groups, count >= 0,
              (sum + sumOfSquares).allSatisfy(\.isFinite) else { return nil }
        (self.groups, self.sum, self.sumOfSquares, self.count) = (groups, sum, sumOfSquares, count)
    }

    /// Adds the elements of `x`, [1, C, h, w] with C divisible by `groups`.
    public mutating func accumulate(_ x: Tensor) {
        precondition(x.rank == 4 && x.shape[0] == 1, "GroupStatistics: expected [1, C, h, w], got \(x.shape)")
        let c = x.shape[1]
        precondition(c % groups == 0, "GroupStatistics: \(c) channels are not divisible into \(groups) groups")
        let groupSize = (c / groups) * x.shape[2] * x.shape[3]
        var partial = [Double](repeating: 0, count: 2 * groups)
        x.withUnsafeBufferPointer { xp in
            partial.withUnsafeMutableBufferPointer { pp in
                let src = xp.baseAddress!, out = pp.baseAddress!
                Compute.parallelFor(groups) { g in
                    let p = src + g * groupSize
                    var s = 0.0, q = 0.0
                    for i in 0..<groupSize {
                        let v = Double(p[i])
                        s += v
                        q += v * v
                    }
                    out[2 * g] = s
                    out[2 * g + 1] = q
                }
            }
        }
        for g in 0..<groups {
            sum[g] += partial[2 * g]
            sumOfSquares[g] += partial[2 * g + 1]
        }
        count += groupSize
    }

    /// Adds `other`'s sums, as `accumulate` adds a tile's: a map's statistics gathered tile by tile
    /// from several processes and merged in tile order are those of one process, bit for bit.
    public mutating func merge(_ other: GroupStatistics) {
        precondition(other.groups == groups, "GroupStatistics: \(other.groups) groups merged into \(groups)")
        for g in 0..<groups {
            sum[g] += other.sum[g]
            sumOfSquares[g] += other.sumOfSquares[g]
        }
        count += other.count
    }

    /// The sums and count as bytes (for messages between processes of one job).
    public var bytes: [UInt8] {
        let values = [Double(count)] + sum + sumOfSquares
        return values.withUnsafeBytes { Array($0) }
    }

    /// Statistics of `groups` groups from `bytes`; nil unless they are exactly what `bytes` writes.
    public init?(groups: Int, bytes: [UInt8]) {
        guard groups > 0, bytes.count == 8 * (1 + 2 * groups) else { return nil }
        var values = [Double](repeating: 0, count: 1 + 2 * groups)
        values.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
        guard values[0] >= 0, values[0] < 9e15, values[0] == values[0].rounded() else { return nil }
        self.init(groups: groups, sum: Array(values[1...groups]), sumOfSquares: Array(values[(groups + 1)...]),
                  count: Int(values[0]))
    }

    /// Mean and 1/sqrt(biased variance + eps) of each group.
    public func meanAndInverseStd(eps: Float) -> [(mean: Float, inverseStd: Float)] {
        precondition(count > 0, "GroupStatistics: no elements accumulated")
        let n = Double(count)
        return (0..<groups).map { g in
            let mean = sum[g] / n
            let variance = max(0, sumOfSquares[g] / n - mean * mean)
            return (Float(mean), Float(1 / (variance + Double(eps)).squareRoot()))
        }
    }
}

/// `torch.nn.GroupNorm` applied to `x` [1, C, h, w] — a tile of a larger map — with the
/// statistics of the whole map, optionally followed by SiLU.
public func groupNorm(_ x: Tensor, statistics: GroupStatistics, weight: Tensor, bias: Tensor, eps: Float,
                      activation: FusedActivation = .none) -> Tensor {
    let c = x.shape[1], groups = statistics.groups
    precondition(x.shape[0] == 1 && c % groups == 0, "groupNorm(statistics:): input \(x.shape), \(groups) groups")
    let spatial = x.count / c, perGroup = c / groups
    let moments = statistics.meanAndInverseStd(eps: eps)
    return Tensor(uninitializedShape: x.shape) { out in
        x.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { gp in
                bias.withUnsafeBufferPointer { bp in
                    let src = xp.baseAddress!, dst = out.baseAddress!
                    Compute.parallelFor(c, minimumPerThread: 4) { ch in
                        let (mean, rstd) = moments[ch / perGroup]
                        let scale = gp[ch] * rstd
                        let shift = bp[ch] - mean * scale
                        pk_scale_shift(src + ch * spatial, dst + ch * spatial, spatial, scale, shift,
                                       activation == .silu ? 1 : 0)
                    }
                }
            }
        }
    }
}
