import CKernels
/// Zero padding of a 2-D convolution's input, per side (asymmetric padding serves the VAE
/// encoder's stride-2 convolutions, which pad only the bottom and right).
public struct Padding2D: Sendable, Equatable {
    public var top: Int, bottom: Int, left: Int, right: Int
    public init(top: Int, bottom: Int, left: Int, right: Int) {
        self.top = top; self.bottom = bottom; self.left = left; self.right = right
    }
    public static func uniform(_ p: Int) -> Padding2D { Padding2D(top: p, bottom: p, left: p, right: p) }
}

/// Bytes of scratch space for one im2col block: large enough for efficient GEMMs, small enough
/// that a 512x4096 VAE decode does not need gigabytes of column buffer.
private let im2colBudget = 8 << 20  // floats

/// 2-D convolution, NCHW, as `torch.nn.Conv2d` (groups = 1, dilation = 1).
/// `weight` is [out, in, kh, kw]. 1x1 stride-1 convolutions are a single GEMM; others go through
/// im2col in blocks of output rows.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1,
                   padding: Padding2D) -> Tensor {
    conv2d(x, weight: .float32(weight), bias: bias, stride: stride, padding: padding)
}

/// `conv2d` with a float32 or a packed weight; a packed one computes in its own format, except
/// where `winograd` sends the layer through float32 Winograd (shapes: `Compute.winograd`).
public func conv2d(_ x: Tensor, weight layerWeight: LayerWeight, bias: Tensor?, stride: Int = 1,
                   padding: Padding2D, winograd: WinogradUse = .atFP32) -> Tensor {
    let weight = layerWeight.shape
    precondition(x.rank == 4 && weight.count == 4, "conv2d: input \(x.shape), weight \(weight)")
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (cout, kh, kw) = (weight[0], weight[2], weight[3])
    precondition(weight[1] == cin, "conv2d: input has \(cin) channels, weight expects \(weight[1])")
    let hout = (h + padding.top + padding.bottom - kh) / stride + 1
    let wout = (w + padding.left + padding.right - kw) / stride + 1
    let kdim = cin * kh * kw
    let plane = hout * wout

    // Every output element is written by a GEMM with beta = 0, so no zero fill is needed.
    let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == .uniform(0)
    let rowsPerBlock = max(1, min(hout, im2colBudget / max(1, kdim * wout)))
    var packed: PackedWeight?
    if case .packed(let p) = layerWeight { packed = p }
    let format = packed?.format ?? Compute.gemmFormat
    // The own GEMM's vector kernels with whole 32-pixel panels per output row: they gather their
    // operand straight from the input, no im2col buffer.
    let implicit = !pointwise && format.map { pk_gemm_fast($0) != 0 } == true && stride == 1 && wout % 32 == 0
    if winograd.applies(weightIsPacked: packed != nil)
        && Compute.usesWinograd(channels: cin, outChannels: cout, kernel: (kh, kw), stride: stride, outputPixels: plane) {
        let transformed: WinogradWeight
        switch (winograd, layerWeight) {
        case (.cached(let cache), .packed(let p)):
            transformed = cache.weight(roundedToBF16: p.format == PK_BF16) { WinogradWeight(p) }
        case (.cached(let cache), .float32(let t)):
            let round = Compute.precision == .bf16
            transformed = cache.weight(roundedToBF16: round) {
                t.withUnsafeBufferPointer {
                    WinogradWeight($0.baseAddress!, outChannels: cout, channels: cin, roundedToBF16: round, kept: true)
                }
            }
        case (_, .float32(let t)):
            transformed = t.withUnsafeBufferPointer { WinogradWeight($0.baseAddress!, outChannels: cout, channels: cin) }
        case (_, .packed): preconditionFailure("conv2d: Winograd of a packed weight needs a cache")
        }
        return Tensor(uninitializedShape: [n, cout, hout, wout]) { op in
            x.withUnsafeBufferPointer { xp in
                func run(_ bias: UnsafePointer<Float>?) {
                    winogradConvolution(xp.baseAddress!, n: n, height: h, width: w, weight: transformed,
                                        padding: padding, outHeight: hout, outWidth: wout, bias: bias,
                                        output: op.baseAddress!)
                }
                if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress!) } } else { run(nil) }
            }
        }
    }
    return Tensor(uninitializedShape: [n, cout, hout, wout]) { op in
        x.withUnsafeBufferPointer { xp in
            layerWeight.withFloat32Pointer { weightPointer in
                /// C = W · B for `n` columns of B, with the float32 or the packed weight.
                func product(n: Int, k: Int, b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>) {
                    if let packed {
                        gemm(packed: packed, n: n, b: b, ldb: ldb, c: c, ldc: plane)
                    } else {
                        gemm(m: cout, n: n, k: k, a: weightPointer!, lda: k, b: b, ldb: ldb, c: c, ldc: plane)
                    }
                }
                /// Output rows `range` of image `b`; `parallel` spreads im2col over the workers.
                func convolve(_ b: Int, rows range: Range<Int>, parallel: Bool) {
                    let input = xp.baseAddress! + b * cin * h * w
                    let output = op.baseAddress! + b * cout * plane
                    if pointwise {
                        product(n: range.count * wout, k: cin, b: input + range.lowerBound * w, ldb: h * w,
                                c: output + range.lowerBound * wout)
                        return
                    }
                    if implicit {
                        pk_conv(format!, input, cin, h, w, weightPointer, packed?.panels, cout, kh, kw, stride,
                                padding.top, padding.left, wout, range.lowerBound, range.count,
                                output + range.lowerBound * wout, plane)
                        return
                    }
                    let col = pk_scratch(kdim * rowsPerBlock * wout, 0)!
                    var y0 = range.lowerBound
                    while y0 < range.upperBound {
                        let rows = min(rowsPerBlock, range.upperBound - y0)
                        let cols = rows * wout
                        im2col(input, channels: cin, height: h, width: w, kh: kh, kw: kw, stride: stride,
                               padding: padding, outWidth: wout, firstRow: y0, rows: rows, into: col,
                               parallel: parallel)
                        product(n: cols, k: kdim, b: col, ldb: cols, c: output + y0 * wout)
                        y0 += rows
                    }
                }
                let workers = Compute.threads
                if workers > 1 && (n >= workers || hout >= 2 * workers) {
                    // Images (classifier-free guidance makes at least 2), or bands of output rows
                    // of a single image, go to separate workers with single-threaded GEMMs: no
                    // synchronisation inside the products, and im2col runs in parallel for free.
                    let slices = n >= workers ? 1 : workers
                    Compute.withSingleThreadedBLAS {
                        Compute.parallelFor(n * slices) { job in
                            let (b, slice) = (job / slices, job % slices)
                            let rows = (hout * slice / slices)..<(hout * (slice + 1) / slices)
                            convolve(b, rows: rows, parallel: false)
                        }
                    }
                } else {
                    for b in 0..<n { convolve(b, rows: 0..<hout, parallel: true) }
                }
            }
        }
        if let bias { addChannelBias(op.baseAddress!, batch: n, channels: cout, plane: plane, bias: bias) }
    }
}

/// Convenience for the common symmetric case.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int) -> Tensor {
    conv2d(x, weight: weight, bias: bias, stride: stride, padding: .uniform(padding))
}

/// Writes the [cin·kh·kw, rows·outWidth] column matrix for output rows firstRow..<firstRow+rows.
private func im2col(_ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int,
                    kh: Int, kw: Int, stride: Int, padding: Padding2D, outWidth: Int,
                    firstRow: Int, rows: Int, into col: UnsafeMutablePointer<Float>, parallel: Bool) {
    let cols = rows * outWidth
    let channel = { (c: Int) in
        let src = input + c * height * width
        for ky in 0..<kh {
            for kx in 0..<kw {
                let dst = col + ((c * kh + ky) * kw + kx) * cols
                for r in 0..<rows {
                    let iy = (firstRow + r) * stride - padding.top + ky
                    let drow = dst + r * outWidth
                    if iy < 0 || iy >= height {
                        drow.update(repeating: 0, count: outWidth)
                        continue
                    }
                    let srow = src + iy * width
                    if stride == 1 {
                        // Valid output columns are those whose input column lies inside the row.
                        let lo = min(outWidth, max(0, padding.left - kx))
                        let hi = max(lo, min(outWidth, width + padding.left - kx))
                        if lo > 0 { drow.update(repeating: 0, count: lo) }
                        if hi > lo { (drow + lo).update(from: srow + (lo - padding.left + kx), count: hi - lo) }
                        if hi < outWidth { (drow + hi).update(repeating: 0, count: outWidth - hi) }
                    } else {
                        for ox in 0..<outWidth {
                            let ix = ox * stride - padding.left + kx
                            drow[ox] = (ix >= 0 && ix < width) ? srow[ix] : 0
                        }
                    }
                }
            }
        }
    }
    if parallel {
        Compute.parallelFor(channels, channel)
    } else {
        for c in 0..<channels { channel(c) }
    }
}

/// Adds `bias[c]` to every value of channel c in an NCHW buffer.
@inline(__always)
func addChannelBias(_ p: UnsafeMutablePointer<Float>, batch: Int, channels: Int, plane: Int, bias: Tensor) {
    bias.withUnsafeBufferPointer { bp in
        let bias = bp.baseAddress!
        Compute.parallelFor(batch * channels, minimumPerThread: 4) { i in
            let v = bias[i % channels]
            let row = p + i * plane
            for j in 0..<plane { row[j] += v }
        }
    }
}
