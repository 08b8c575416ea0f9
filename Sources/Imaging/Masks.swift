import Foundation
import Tensors

/// Pixel masks for inpainting and outpainting: [1, 1, H, W] tensors in [0, 1], 1 where the model
/// paints.
public enum Mask {
    /// AUTOMATIC1111's `mask_blur`: a Gaussian of standard deviation `radius` pixels, applied
    /// along the rows and then along the columns, with a kernel of 2·⌊2.5·radius + 0.5⌋ + 1 taps and
    /// mirrored edges (OpenCV's default border, `cv2.GaussianBlur` as A1111's img2img calls it).
    /// A1111 rounds to 8 bits after each pass; this keeps floats (within 1/255 of it).
    /// `radius` ≤ 0 returns the mask unchanged.
    public static func blurred(_ mask: Tensor, radius: Double) -> Tensor {
        precondition(mask.rank == 4 && mask.shape[0] == 1 && mask.shape[1] == 1, "mask \(mask.shape), expected [1, 1, H, W]")
        guard radius > 0 else { return mask }
        let half = Int(2.5 * radius + 0.5)
        var kernel = (-half...half).map { exp(-Double($0 * $0) / (2 * radius * radius)) }
        let sum = kernel.reduce(0, +)
        kernel = kernel.map { $0 / sum }
        let (h, w) = (mask.shape[2], mask.shape[3])
        let rows = pass(mask.data, count: w, lines: h, stride: 1, lineStride: w, kernel: kernel)
        let both = pass(rows, count: h, lines: w, stride: w, lineStride: 1, kernel: kernel)
        return Tensor(shape: mask.shape, data: both.map { Float($0) })
    }

    /// One 1-D convolution along `lines` lines of `count` samples, border mirrored without
    /// repeating the edge sample (dcb|abcd|cba).
    private static func pass<T: BinaryFloatingPoint>(_ x: [T], count: Int, lines: Int, stride: Int, lineStride: Int,
                                                     kernel: [Double]) -> [Double] {
        let half = kernel.count / 2
        func mirror(_ i: Int) -> Int {
            guard count > 1 else { return 0 }
            let period = 2 * (count - 1)
            var j = i % period
            if j < 0 { j += period }
            return j < count ? j : period - j
        }
        var out = [Double](repeating: 0, count: x.count)
        for line in 0..<lines {
            let base = line * lineStride
            for i in 0..<count {
                var acc = 0.0
                for (k, weight) in kernel.enumerated() { acc += weight * Double(x[base + mirror(i + k - half) * stride]) }
                out[base + i * stride] = acc
            }
        }
        return out
    }

    /// `original` where the mask is 0, `generated` where it is 1, blended between:
    /// original·(1 − m) + generated·m, as A1111's overlay of the original image and diffusers'
    /// `apply_overlay` compose the result. Images [1, 3, H, W], mask [1, 1, H, W].
    public static func composite(generated: Tensor, original: Tensor, mask: Tensor) -> Tensor {
        precondition(generated.shape == original.shape && generated.count == 3 * mask.count,
                     "composite: generated \(generated.shape), original \(original.shape), mask \(mask.shape)")
        let plane = mask.count
        return Tensor(uninitializedShape: generated.shape) { out in
            for c in 0..<3 {
                for i in 0..<plane {
                    let m = mask.data[i], j = c * plane + i
                    out[j] = original.data[j] * (1 - m) + generated.data[j] * m
                }
            }
        }
    }

    /// As `composite(generated:original:mask:)` on 8-bit images, rounded to the nearest level.
    public static func composite(generated: RGBImage, original: RGBImage, mask: Tensor) -> RGBImage {
        precondition(generated.width == original.width && generated.height == original.height
                     && mask.count == generated.width * generated.height,
                     "composite: \(generated.width)x\(generated.height), \(original.width)x\(original.height), mask \(mask.shape)")
        var pixels = [UInt8](repeating: 0, count: generated.pixels.count)
        for i in 0..<pixels.count {
            let m = min(1, max(0, mask.data[i / 3]))
            let v = Float(original.pixels[i]) * (1 - m) + Float(generated.pixels[i]) * m
            pixels[i] = UInt8(min(255, max(0, v.rounded())))
        }
        return RGBImage(width: generated.width, height: generated.height, pixels: pixels)
    }
}

extension RGBImage {
    /// The image as a mask [1, 1, H, W] in [0, 1]: its grey level as PIL's `convert("L")` computes
    /// it (ITU-R 601 luma, L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16), divided by 255; a grey
    /// PNG's own values.
    public func maskTensor() -> Tensor {
        let plane = width * height
        var data = [Float](repeating: 0, count: plane)
        for i in 0..<plane {
            let (r, g, b) = (Int(pixels[3 * i]), Int(pixels[3 * i + 1]), Int(pixels[3 * i + 2]))
            data[i] = Float((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) / 255
        }
        return Tensor(shape: [1, 1, height, width], data: data)
    }
}
