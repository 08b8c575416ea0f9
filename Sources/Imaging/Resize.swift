import Foundation
import Tensors

extension RGBImage {
    /// The image resampled to `width` x `height` with a Lanczos-3 filter (widened when shrinking,
    /// so downscaling does not alias).
    ///
    /// With `linearLight` (the default) the filter averages light, not sRGB code values: pixels
    /// are decoded to linear intensity first and encoded again after, so fine bright-dark
    /// detail keeps its brightness instead of darkening (gamma-aware resizing).
    public func resized(width ow: Int, height oh: Int, linearLight: Bool = true) -> RGBImage {
        precondition(ow > 0 && oh > 0, "resized: empty target \(ow)x\(oh)")
        if ow == width && oh == height { return self }
        let decode: [Float] = (0..<256).map { linearLight ? srgbToLinear(Float($0) / 255) : Float($0) / 255 }
        let horizontal = ResamplingWeights(input: width, output: ow)
        let vertical = ResamplingWeights(input: height, output: oh)
        let columnTaps = (0..<ow).map { horizontal.taps($0) }

        // Rows first: [height][ow][3] in linear light.
        var wide = [Float](repeating: 0, count: height * ow * 3)
        pixels.withUnsafeBufferPointer { src in
            wide.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                Compute.parallelFor(height, minimumPerThread: 16) { y in
                    let row = s + y * width * 3, out = d + y * ow * 3
                    for x in 0..<ow {
                        var r: Float = 0, g: Float = 0, b: Float = 0
                        for (i, w) in columnTaps[x] {
                            let p = row + i * 3
                            r += w * decode[Int(p[0])]
                            g += w * decode[Int(p[1])]
                            b += w * decode[Int(p[2])]
                        }
                        out[x * 3] = r
                        out[x * 3 + 1] = g
                        out[x * 3 + 2] = b
                    }
                }
            }
        }
        // Then columns, and back to 8-bit sRGB.
        var result = [UInt8](repeating: 0, count: oh * ow * 3)
        wide.withUnsafeBufferPointer { src in
            result.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                Compute.parallelFor(oh, minimumPerThread: 16) { y in
                    let taps = vertical.taps(y), out = d + y * ow * 3
                    for i in 0..<(ow * 3) {
                        var v: Float = 0
                        for (row, w) in taps { v += w * s[row * ow * 3 + i] }
                        v = min(1, max(0, v))
                        out[i] = UInt8((linearLight ? linearToSRGB(v) : v) * 255 + 0.5)
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: result)
    }
}

extension RGBImage {
    /// Nearest-neighbour resampling (each output pixel takes the input pixel under its centre),
    /// for masks, whose values must not blend.
    public func resizedNearest(width ow: Int, height oh: Int) -> RGBImage {
        precondition(ow > 0 && oh > 0, "resizedNearest: empty target \(ow)x\(oh)")
        var out = [UInt8](repeating: 0, count: ow * oh * 3)
        for y in 0..<oh {
            let sy = min(height - 1, (2 * y + 1) * height / (2 * oh))
            for x in 0..<ow {
                let sx = min(width - 1, (2 * x + 1) * width / (2 * ow))
                for c in 0..<3 { out[(y * ow + x) * 3 + c] = pixels[(sy * width + sx) * 3 + c] }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}

/// Normalised Lanczos-3 taps for each output coordinate of a 1-D resampling; source indices
/// beyond the edges are clamped (edge pixels repeat).
struct ResamplingWeights {
    private let starts: [Int]
    private let counts: [Int]
    private let indices: [Int]
    private let weights: [Float]

    init(input: Int, output: Int) {
        let scale = Double(input) / Double(output)
        let filterScale = max(scale, 1)
        let support = 3 * filterScale
        var starts: [Int] = [], counts: [Int] = [], indices: [Int] = [], weights: [Float] = []
        for o in 0..<output {
            let center = (Double(o) + 0.5) * scale - 0.5
            let first = Int((center - support).rounded(.up)), last = Int((center + support).rounded(.down))
            var taps: [(Int, Double)] = []
            for j in first...last {
                let w = lanczos3((Double(j) - center) / filterScale)
                if w != 0 { taps.append((min(max(j, 0), input - 1), w)) }
            }
            let total = taps.reduce(0) { $0 + $1.1 }
            starts.append(indices.count)
            counts.append(taps.count)
            for (i, w) in taps {
                indices.append(i)
                weights.append(Float(w / total))
            }
        }
        self.starts = starts
        self.counts = counts
        self.indices = indices
        self.weights = weights
    }

    func taps(_ o: Int) -> [(Int, Float)] {
        (starts[o]..<(starts[o] + counts[o])).map { (indices[$0], weights[$0]) }
    }
}

private func lanczos3(_ x: Double) -> Double {
    if x == 0 { return 1 }
    if abs(x) >= 3 { return 0 }
    let px = Double.pi * x
    return 3 * sin(px) * sin(px / 3) / (px * px)
}

/// sRGB transfer function (IEC 61966-2-1), code value in [0, 1] to linear intensity.
func srgbToLinear(_ v: Float) -> Float {
    v <= 0.04045 ? v / 12.92 : powf((v + 0.055) / 1.055, 2.4)
}

/// Its inverse.
func linearToSRGB(_ v: Float) -> Float {
    v <= 0.0031308 ? v * 12.92 : 1.055 * powf(v, 1 / 2.4) - 0.055
}
