/// A decoder's value in [-1, 1] as an 8-bit level, as the diffusers pipelines convert it:
/// (v / 2 + 0.5) clamped to [0, 1], times 255, rounded.
@inline(__always)
public func pixelByte(_ v: Float) -> UInt8 {
    UInt8((min(1, max(0, v / 2 + 0.5)) * 255).rounded(.toNearestOrEven))
}

extension Tensor {
    /// A decoder's output [1, 3, H, W] in [-1, 1] as 8-bit RGB, rows top to bottom, pixels
    /// interleaved (`pixelByte` per value): what pictures and previews are made of.
    public func interleavedRGBBytes() -> [UInt8] {
        precondition(rank == 4 && shape[0] == 1 && shape[1] == 3, "expected [1, 3, H, W], got \(shape)")
        let plane = shape[2] * shape[3]
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        withUnsafeBufferPointer { p in
            for c in 0..<3 { for i in 0..<plane { pixels[i * 3 + c] = pixelByte(p[c * plane + i]) } }
        }
        return pixels
    }
}
