extension RGBImage {
    /// The image grown to `width` x `height` (at least its own size) by repeating its last column
    /// and row, so padding continues the picture instead of adding an edge.
    public func padded(width newWidth: Int, height newHeight: Int) -> RGBImage {
        precondition(newWidth >= width && newHeight >= height, "padded: \(newWidth)x\(newHeight) is smaller than \(width)x\(height)")
        guard newWidth != width || newHeight != height else { return self }
        var out = [UInt8](repeating: 0, count: newWidth * newHeight * 3)
        for y in 0..<newHeight {
            let sy = min(y, height - 1)
            for x in 0..<newWidth {
                let s = (sy * width + min(x, width - 1)) * 3, d = (y * newWidth + x) * 3
                out[d] = pixels[s]
                out[d + 1] = pixels[s + 1]
                out[d + 2] = pixels[s + 2]
            }
        }
        return RGBImage(width: newWidth, height: newHeight, pixels: out)
    }

    /// The top-left `width` x `height` pixels.
    public func cropped(width newWidth: Int, height newHeight: Int) -> RGBImage {
        precondition(newWidth <= width && newHeight <= height, "cropped: \(newWidth)x\(newHeight) is larger than \(width)x\(height)")
        guard newWidth != width || newHeight != height else { return self }
        var out = [UInt8]()
        out.reserveCapacity(newWidth * newHeight * 3)
        for y in 0..<newHeight { out += pixels[(y * width * 3)..<((y * width + newWidth) * 3)] }
        return RGBImage(width: newWidth, height: newHeight, pixels: out)
    }
}
