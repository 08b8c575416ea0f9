/// A dense, row-major float32 tensor. Images and feature maps are NCHW; token sequences are
/// [batch, tokens, channels].
///
/// A value type backed by a copy-on-write array, so tensors can be passed around freely; kernels
/// work on the raw buffer through `withUnsafe…` accessors.
public struct Tensor: Sendable, Equatable {
    public private(set) var shape: [Int]
    public var data: [Float]

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.data = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// A tensor filled with one value.
    public init(repeating value: Float, shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: value, count: shape.reduce(1, *))
    }

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count,
                     "shape \(shape) needs \(shape.reduce(1, *)) values, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    /// A tensor whose storage is filled by `body`, which receives an uninitialised buffer of
    /// `shape`'s element count and must write every element.
    public init(uninitializedShape shape: [Int],
                _ body: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        let n = shape.reduce(1, *)
        self.shape = shape
        self.data = try [Float](unsafeUninitializedCapacity: n) { buffer, count in
            try body(buffer)
            count = n
        }
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same values under another shape with the same element count. One dimension may be -1.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            s[i] = known == 0 ? 0 : count / known
        }
        precondition(s.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: s, data: data)
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try data.withUnsafeBufferPointer(body)
    }

    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        try data.withUnsafeMutableBufferPointer { try body($0) }
    }

    /// Largest absolute value (0 for an empty tensor).
    public var maxAbs: Float { data.reduce(0) { max($0, abs($1)) } }

    /// Largest absolute element-wise difference to `other`, which must have the same shape.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "shape \(shape) vs \(other.shape)")
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(data[i] - other.data[i])) }
        return m
    }

    /// Batch slice `i` of the first dimension, keeping it (shape [1, ...]).
    public func batch(_ i: Int) -> Tensor {
        let per = count / shape[0]
        return Tensor(shape: [1] + shape.dropFirst(), data: Array(data[(i * per)..<((i + 1) * per)]))
    }
}
