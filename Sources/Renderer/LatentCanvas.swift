import Tensors

extension Tensor {
    /// The window `view` of a [1, C, H, W] canvas, wrapping columns past the right edge.
    public func crop(_ view: LatentView) -> Tensor {
        let (c, h, w) = (shape[1], shape[2], shape[3])
        precondition(shape[0] == 1 && view.row + view.height <= h, "crop \(view) of \(shape)")
        return Tensor(uninitializedShape: [1, c, view.height, view.width]) { out in
            withUnsafeBufferPointer { src in
                for ch in 0..<c {
                    for y in 0..<view.height {
                        let srow = src.baseAddress! + (ch * h + view.row + y) * w
                        let drow = out.baseAddress! + (ch * view.height + y) * view.width
                        for x in 0..<view.width { drow[x] = srow[(view.column + x) % w] }
                    }
                }
            }
        }
    }
}

/// MultiDiffusion's fusion buffers: every denoised window is added, weighted, into `value`, its
/// weights into `count`, and the canvas is their ratio.
public struct Fuser: Sendable {
    public let channels: Int, height: Int, width: Int
    private var value: [Float]
    private var count: [Float]

    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
        value = [Float](repeating: 0, count: channels * height * width)
        count = [Float](repeating: 0, count: height * width)
    }

    /// Adds window `x` [1, C, vh, vw] at `view` with per-pixel `weight` [vh·vw] (1 when nil).
    public mutating func add(_ x: Tensor, at view: LatentView, weight: [Float]? = nil) {
        precondition(x.shape == [1, channels, view.height, view.width], "fuse \(x.shape) at \(view)")
        let (h, w) = (height, width)
        x.withUnsafeBufferPointer { xp in
            value.withUnsafeMutableBufferPointer { vp in
                count.withUnsafeMutableBufferPointer { cp in
                    for y in 0..<view.height {
                        let row = view.row + y
                        for xx in 0..<view.width {
                            let col = (view.column + xx) % w
                            let k = weight?[y * view.width + xx] ?? 1
                            cp[row * w + col] += k
                            for ch in 0..<channels {
                                vp[(ch * h + row) * w + col] += k * xp[(ch * view.height + y) * view.width + xx]
                            }
                        }
                    }
                }
            }
        }
    }

    /// value / count where count > 0; elsewhere the accumulated value (0), as diffusers does.
    public func fused() -> Tensor {
        let plane = height * width
        var out = value
        for ch in 0..<channels {
            for i in 0..<plane where count[i] > 0 { out[ch * plane + i] = value[ch * plane + i] / count[i] }
        }
        return Tensor(shape: [1, channels, height, width], data: out)
    }

    /// Pixels that no window covered (diffusers leaves such columns at zero; this tiler never does).
    public var uncoveredPixels: Int { count.reduce(0) { $0 + ($1 > 0 ? 0 : 1) } }
}
