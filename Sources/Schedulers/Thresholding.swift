import Foundation

/// Imagen's dynamic thresholding (diffusers' `_threshold_sample`): per sample, clamp x₀ to the
/// `ratio` quantile of |x₀| (at least 1, at most `maxValue`) and rescale by it.
func dynamicThreshold(_ x0: [Float], batch: Int, ratio: Double, maxValue: Double) -> [Float] {
    var out = x0
    let per = x0.count / batch
    for b in 0..<batch {
        let slice = x0[(b * per)..<((b + 1) * per)]
        let sorted = slice.map { abs($0) }.sorted()
        // torch.quantile's linear interpolation.
        let position = ratio * Double(per - 1)
        let lo = Int(position.rounded(.down)), hi = min(per - 1, lo + 1)
        let q = Double(sorted[lo]) + (Double(sorted[hi]) - Double(sorted[lo])) * (position - Double(lo))
        let s = Float(min(max(q, 1), maxValue))
        for i in (b * per)..<((b + 1) * per) { out[i] = min(s, max(-s, out[i])) / s }
    }
    return out
}
