import Tensors

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Converts a VAE output [1, 3, H, W] in [-1, 1] as the diffusers pipelines do:
    /// (x / 2 + 0.5) clamped to [0, 1], times 255, rounded.
    public init(decoded image: Tensor) {
        let pixels = image.interleavedRGBBytes()  // checks the shape first
        self.init(width: image.shape[3], height: image.shape[2], pixels: pixels)
    }

    /// The image as a VAE input [1, 3, H, W] in [-1, 1].
    public func tensor() -> Tensor {
        let plane = width * height
        var data = [Float](repeating: 0, count: plane * 3)
        for i in 0..<plane {
            for c in 0..<3 { data[c * plane + i] = Float(pixels[i * 3 + c]) / 127.5 - 1 }
        }
        return Tensor(shape: [1, 3, height, width], data: data)
    }
}
