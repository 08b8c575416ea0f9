import Tensors

/// A low-rank change to one weight, `scale · up · down`: a LoRA module at its weight.
///
/// `up` is [out, rank] (or [out, rank, 1, 1]) and `down` [rank, in] or [rank, in, kh, kw], so the
/// product is [out, in · kh · kw], read in the weight's own layout. A linear LoRA on a 1x1
/// convolution (or the reverse) fits as long as the element counts agree, as kohya, diffusers and
/// A1111 all allow.
public struct WeightDelta: Sendable {
    public var up: Tensor
    public var down: Tensor
    public var scale: Float

    public init(up: Tensor, down: Tensor, scale: Float) {
        self.up = up
        self.down = down
        self.scale = scale
    }

    public var rank: Int { down.shape.first ?? 0 }
    /// Rows of the product (the weight's output channels).
    public var rows: Int { up.shape.first ?? 0 }
    /// Columns of the product (input channels times the kernel's size).
    public var columns: Int { rank == 0 ? 0 : down.count / rank }

    /// Whether the product has the size of a weight of shape `shape` (output channels first).
    public func fits(_ shape: [Int]) -> Bool {
        guard let out = shape.first, out == rows, rank > 0, up.count == rows * rank else { return false }
        return shape.reduce(1, *) == rows * columns && (shape.count != 4 || down.shape.count != 4
            || Array(shape.suffix(2)) == Array(down.shape.suffix(2)))
    }

    /// `weight += scale · up · down`, in float32.
    public func add(to weight: inout Tensor) {
        precondition(fits(weight.shape), "WeightDelta: \(up.shape) x \(down.shape) does not fit \(weight.shape)")
        let (m, n, k) = (rows, columns, rank)
        up.withUnsafeBufferPointer { a in
            down.withUnsafeBufferPointer { b in
                weight.withUnsafeMutableBufferPointer { c in
                    sgemm(m: m, n: n, k: k, alpha: scale, a: a.baseAddress!, lda: k, b: b.baseAddress!, ldb: n,
                          beta: 1, c: c.baseAddress!, ldc: n)
                }
            }
        }
    }
}
