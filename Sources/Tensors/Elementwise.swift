import CKernels
/// Shape and arithmetic helpers: residual adds, scaling, channel concatenation, nearest
/// upsampling, and the NCHW ↔ token-sequence transposes the transformer blocks need.
extension Tensor {
    /// Element-wise sum; shapes must match.
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "add: \(a.shape) vs \(b.shape)")
        var y = a
        y += b
        return y
    }

    /// Element-wise in-place sum; shapes must match.
    public static func += (a: inout Tensor, b: Tensor) {
        precondition(a.shape == b.shape, "add: \(a.shape) vs \(b.shape)")
        let n = a.count
        a.withUnsafeMutableBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                let x = ap.baseAddress!, y = bp.baseAddress!
                for i in 0..<n { x[i] += y[i] }
            }
        }
    }

    public static func - (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "subtract: \(a.shape) vs \(b.shape)")
        var y = a
        y.withUnsafeMutableBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                for i in 0..<ap.count { ap[i] -= bp[i] }
            }
        }
        return y
    }

    public static func * (a: Tensor, s: Float) -> Tensor {
        var y = a
        y.withUnsafeMutableBufferPointer { p in for i in 0..<p.count { p[i] *= s } }
        return y
    }

    public static func + (a: Tensor, s: Float) -> Tensor {
        var y = a
        y.withUnsafeMutableBufferPointer { p in for i in 0..<p.count { p[i] += s } }
        return y
    }

    public static func - (a: Tensor, s: Float) -> Tensor { a + (-s) }

    public static func / (a: Tensor, s: Float) -> Tensor {
        var y = a
        y.withUnsafeMutableBufferPointer { p in for i in 0..<p.count { p[i] /= s } }
        return y
    }

    /// Concatenation along dimension 1 (channels of NCHW, or tokens of [B, N, C]).
    public static func concatenate(_ parts: [Tensor], dimension: Int = 1) -> Tensor {
        precondition(!parts.isEmpty)
        let first = parts[0].shape
        let outer = first[0..<dimension].reduce(1, *)
        let inner = first[(dimension + 1)...].reduce(1, *)
        for p in parts {
            precondition(p.rank == first.count && Array(p.shape[0..<dimension]) == Array(first[0..<dimension])
                         && Array(p.shape[(dimension + 1)...]) == Array(first[(dimension + 1)...]),
                         "concatenate: \(parts.map(\.shape))")
        }
        let total = parts.reduce(0) { $0 + $1.shape[dimension] }
        var shape = first
        shape[dimension] = total
        return Tensor(uninitializedShape: shape) { out in
            var offset = 0
            for p in parts {
                let block = p.shape[dimension] * inner
                p.withUnsafeBufferPointer { pp in
                    for o in 0..<outer {
                        (out.baseAddress! + o * total * inner + offset)
                            .update(from: pp.baseAddress! + o * block, count: block)
                    }
                }
                offset += block
            }
        }
    }

    /// NCHW → [N, H·W, C], the token layout of the transformer blocks.
    public func nchwToTokens() -> Tensor {
        let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
        return transposed(batches: n, rows: c, columns: hw).reshaped([n, hw, c])
    }

    /// [N, H·W, C] → NCHW.
    public func tokensToNCHW(height: Int, width: Int) -> Tensor {
        let (n, hw, c) = (shape[0], shape[1], shape[2])
        precondition(hw == height * width, "tokensToNCHW: \(hw) tokens for \(height)x\(width)")
        return transposed(batches: n, rows: hw, columns: c).reshaped([n, c, height, width])
    }

    /// Batched 2-D transpose of [batches, rows, columns] into [batches, columns, rows].
    func transposed(batches: Int, rows: Int, columns: Int) -> Tensor {
        Tensor(uninitializedShape: [batches, columns, rows]) { out in
            withUnsafeBufferPointer { src in
                let tile = 32
                let tilesR = (rows + tile - 1) / tile
                Compute.parallelFor(batches * tilesR) { job in
                    let b = job / tilesR, r0 = (job % tilesR) * tile
                    pk_transpose(src.baseAddress! + b * rows * columns + r0 * columns, columns,
                                 out.baseAddress! + b * rows * columns + r0, rows, min(tile, rows - r0), columns)
                }
            }
        }
    }

    /// Nearest-neighbour resize of NCHW to `height` x `width`, with PyTorch's `nearest` rule
    /// (source index = floor(destination · in / out)); a 2x upsample when sizes double.
    public func upsampledNearest(height oh: Int, width ow: Int) -> Tensor {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        return Tensor(uninitializedShape: [n, c, oh, ow]) { out in
            withUnsafeBufferPointer { src in
                let xs = (0..<ow).map { min(w - 1, Int((Double($0) * Double(w) / Double(ow)).rounded(.down))) }
                let ys = (0..<oh).map { min(h - 1, Int((Double($0) * Double(h) / Double(oh)).rounded(.down))) }
                Compute.parallelFor(n * c) { plane in
                    let s = src.baseAddress! + plane * h * w
                    let d = out.baseAddress! + plane * oh * ow
                    for y in 0..<oh {
                        let srow = s + ys[y] * w, drow = d + y * ow
                        for x in 0..<ow { drow[x] = srow[xs[x]] }
                    }
                }
            }
        }
    }

    /// Channel slice [from, to) of an NCHW tensor.
    public func channels(_ range: Range<Int>) -> Tensor {
        let (n, c) = (shape[0], shape[1])
        let inner = count / (n * c)
        var s = shape
        s[1] = range.count
        return Tensor(uninitializedShape: s) { out in
            withUnsafeBufferPointer { src in
                for b in 0..<n {
                    (out.baseAddress! + b * range.count * inner)
                        .update(from: src.baseAddress! + (b * c + range.lowerBound) * inner,
                                count: range.count * inner)
                }
            }
        }
    }
}

extension Tensor {
    /// Rows `rows` and columns `columns` of every plane of an NCHW tensor.
    public func cropped(rows: Range<Int>, columns: Range<Int>) -> Tensor {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        precondition(rows.lowerBound >= 0 && rows.upperBound <= h && columns.lowerBound >= 0 && columns.upperBound <= w,
                     "cropped: rows \(rows), columns \(columns) of \(shape)")
        let (oh, ow) = (rows.count, columns.count)
        return Tensor(uninitializedShape: [n, c, oh, ow]) { out in
            withUnsafeBufferPointer { src in
                for plane in 0..<(n * c) {
                    for y in 0..<oh {
                        let s = src.baseAddress! + plane * h * w + (rows.lowerBound + y) * w + columns.lowerBound
                        (out.baseAddress! + plane * oh * ow + y * ow).update(from: s, count: ow)
                    }
                }
            }
        }
    }
}
