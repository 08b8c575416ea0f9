import CKernels
import Tensors
import XCTest

/// Kernels against direct, loop-by-loop definitions on small random inputs.
final class KernelTests: XCTestCase {
    private func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, data: (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2000) / 1000 - 1
        })
    }

    private func assertClose(_ a: Tensor, _ b: Tensor, _ tolerance: Float = 1e-5,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.shape, b.shape, file: file, line: line)
        let scale = max(1, b.maxAbs)
        XCTAssertLessThanOrEqual(a.maxAbsDifference(b), tolerance * scale, file: file, line: line)
    }

    private func naiveConv(_ x: Tensor, _ w: Tensor, _ bias: Tensor, stride: Int, pad: Padding2D) -> Tensor {
        let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
        let ho = (h + pad.top + pad.bottom - kh) / stride + 1
        let wo = (wd + pad.left + pad.right - kw) / stride + 1
        var out = Tensor(zeros: [n, cout, ho, wo])
        for b in 0..<n { for co in 0..<cout { for oy in 0..<ho { for ox in 0..<wo {
            var s = Double(bias.data[co])
            for ci in 0..<cin { for ky in 0..<kh { for kx in 0..<kw {
                let iy = oy * stride - pad.top + ky, ix = ox * stride - pad.left + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                    s += Double(x.data[((b * cin + ci) * h + iy) * wd + ix])
                        * Double(w.data[((co * cin + ci) * kh + ky) * kw + kx])
                }
            }}}
            out.data[((b * cout + co) * ho + oy) * wo + ox] = Float(s)
        }}}}
        return out
    }

    func testConvolutionMatchesDefinition() {
        // Batch 2 splits images across workers, batch 1 splits bands of output rows.
        for x in [random([2, 5, 9, 7], seed: 1), random([1, 5, 9, 7], seed: 11)] {
        for (k, stride, pad) in [(3, 1, Padding2D.uniform(1)), (3, 2, .uniform(1)),
                                 (3, 2, Padding2D(top: 0, bottom: 1, left: 0, right: 1)),
                                 (1, 1, .uniform(0)), (3, 1, .uniform(0))] {
            let w = random([6, 5, k, k], seed: 2), b = random([6], seed: 3)
            assertClose(conv2d(x, weight: w, bias: b, stride: stride, padding: pad),
                        naiveConv(x, w, b, stride: stride, pad: pad))
        }
        }
    }

    func testWinogradConvolutionMatchesDefinition() {
        // 3x3 stride-1 float32 convolutions on planes of at least 32x32 go through Winograd
        // F(4x4, 3x3): edges that cut tiles, asymmetric padding, and (small scratch) several
        // chunks of tile rows that split the batch's images.
        let savedScratch = Compute.winogradScratchFloats
        defer { Compute.winogradScratchFloats = savedScratch; Compute.winograd = true }
        let w = random([20, 16, 3, 3], seed: 5), b = random([20], seed: 6)
        for scratch in [savedScratch, 36 * (16 + 20) * 9 * 2] {
            Compute.winogradScratchFloats = scratch
            for (x, pad) in [(random([2, 16, 35, 33], seed: 7), Padding2D.uniform(1)),
                             (random([1, 16, 38, 37], seed: 8), .uniform(0)),
                             (random([1, 16, 36, 36], seed: 9), Padding2D(top: 0, bottom: 2, left: 2, right: 0))] {
                Compute.winograd = true
                let fast = conv2d(x, weight: w, bias: b, padding: pad)
                Compute.winograd = false
                let direct = conv2d(x, weight: w, bias: b, padding: pad)
                assertClose(fast, naiveConv(x, w, b, stride: 1, pad: pad), 1e-5)
                assertClose(direct, naiveConv(x, w, b, stride: 1, pad: pad), 2e-6)
                XCTAssertGreaterThan(fast.maxAbsDifference(direct), 0, "Winograd was not used")
            }
        }
    }

    func testWinogradAtBF16OnlyWhenAsked() {
        // At bf16, a float32 weight takes the float32 Winograd path only with
        // `WinogradUse.anyPrecision` (the VAE's layers), and then gives the fp32 result exactly.
        defer { Compute.precision = .fp32 }
        let x = random([1, 16, 33, 35], seed: 12), w = random([18, 16, 3, 3], seed: 13), b = random([18], seed: 14)
        Compute.precision = .fp32
        let fp32 = conv2d(x, weight: .float32(w), bias: b, padding: .uniform(1))
        Compute.precision = .bf16
        let asked = conv2d(x, weight: .float32(w), bias: b, padding: .uniform(1), winograd: .anyPrecision)
        let plain = conv2d(x, weight: .float32(w), bias: b, padding: .uniform(1))
        XCTAssertEqual(asked.maxAbsDifference(fp32), 0)
        XCTAssertGreaterThan(plain.maxAbsDifference(fp32), 1e-4, "bf16 products expected without the flag")
    }

    func testCachedWinogradOfAPackedWeight() {
        // A bf16-packed 3x3 weight with a cache runs float32 Winograd on the weight's bf16 values:
        // closer to the float32 result than the direct bf16 product, the transform made once and
        // kept, and the direct product wherever the plane is too small for Winograd.
        defer { Compute.precision = .fp32 }
        let x = random([2, 32, 34, 33], seed: 21), w = random([24, 32, 3, 3], seed: 22), b = random([24], seed: 23)
        Compute.precision = .fp32
        let exact = naiveConv(x, w, b, stride: 1, pad: .uniform(1))
        Compute.precision = .bf16
        let packed = LayerWeight(w, as: .left)
        let cache = WinogradCache()
        let direct = conv2d(x, weight: packed, bias: b, padding: .uniform(1))
        XCTAssertEqual(cache.bytes, 0)
        let first = conv2d(x, weight: packed, bias: b, padding: .uniform(1), winograd: .cached(cache))
        let kept = cache.bytes
        XCTAssertGreaterThanOrEqual(kept, 36 * 24 * 32 * 4)
        let second = conv2d(x, weight: packed, bias: b, padding: .uniform(1), winograd: .cached(cache))
        XCTAssertEqual(cache.bytes, kept)
        XCTAssertEqual(second.maxAbsDifference(first), 0)
        let directError = direct.maxAbsDifference(exact), winogradError = first.maxAbsDifference(exact)
        XCTAssertLessThan(winogradError, directError)
        XCTAssertGreaterThan(winogradError, 1e-4, "the weight's bf16 rounding should show")
        // The bf16 values themselves, in float32, give the Winograd result to float32 accuracy.
        let rounded = Tensor(shape: w.shape, data: w.data.map(pk_round_bf16))
        assertClose(first, naiveConv(x, rounded, b, stride: 1, pad: .uniform(1)), 1e-5)
        let small = random([1, 32, 16, 16], seed: 24)
        XCTAssertEqual(conv2d(small, weight: packed, bias: b, padding: .uniform(1), winograd: .cached(cache))
            .maxAbsDifference(conv2d(small, weight: packed, bias: b, padding: .uniform(1))), 0)
    }

    func testGroupNormAndSiLU() {
        let x = random([2, 6, 4, 3], seed: 4), g = random([6], seed: 5), b = random([6], seed: 6)
        let y = groupNorm(x, groups: 3, weight: g, bias: b, eps: 1e-5, activation: .silu)
        var expected = x
        let per = 2 * 12
        for bg in 0..<6 {
            let slice = Array(x.data[(bg * per)..<((bg + 1) * per)]).map(Double.init)
            let mean = slice.reduce(0, +) / Double(per)
            let v = slice.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(per)
            for i in 0..<per {
                let c = (bg % 3) * 2 + i / 12
                let z = Float((slice[i] - mean) / (v + 1e-5).squareRoot()) * g.data[c] + b.data[c]
                expected.data[bg * per + i] = z / (1 + exp(-z))
            }
        }
        assertClose(y, expected)
    }

    /// Key blocks of 3 over 7 keys (3 + 3 + 1) take the online-softmax path; the causal case
    /// never does.
    func testAttentionMatchesDefinitionWithAndWithoutCausalMask() {
        let (b, nq, nk, heads, d) = (2, 5, 7, 3, 4)
        let q = random([b, nq, heads * d], seed: 7)
        let saved = Compute.attentionKeyBlock
        defer { Compute.attentionKeyBlock = saved }
        for (causal, keyBlock) in [(false, 0), (false, 3), (true, 0), (true, 3)] {
            Compute.attentionKeyBlock = keyBlock
            let nkeys = causal ? nq : nk
            let k = random([b, nkeys, heads * d], seed: 8), v = random([b, nkeys, heads * d], seed: 9)
            let y = scaledDotProductAttention(q: q, k: k, v: v, heads: heads, causal: causal)
            var expected = Tensor(zeros: [b, nq, heads * d])
            for bi in 0..<b { for h in 0..<heads { for i in 0..<nq {
                let cols = causal ? i + 1 : nkeys
                var scores = (0..<cols).map { j -> Double in
                    (0..<d).reduce(0.0) { s, c in
                        s + Double(q.data[(bi * nq + i) * heads * d + h * d + c])
                            * Double(k.data[(bi * nkeys + j) * heads * d + h * d + c])
                    } / Double(d).squareRoot()
                }
                let m = scores.max()!
                scores = scores.map { exp($0 - m) }
                let total = scores.reduce(0, +)
                for c in 0..<d {
                    expected.data[(bi * nq + i) * heads * d + h * d + c] = Float((0..<cols).reduce(0.0) {
                        $0 + scores[$1] / total * Double(v.data[(bi * nkeys + $1) * heads * d + h * d + c])
                    })
                }
            }}}
            assertClose(y, expected)
        }
    }

    func testSoftmaxRows() {
        let x = random([3, 37], seed: 12)
        let y = softmax(x)
        for r in 0..<3 {
            let row = (0..<37).map { Double(x.data[r * 37 + $0]) }
            let m = row.max()!, total = row.map { exp($0 - m) }.reduce(0, +)
            for j in 0..<37 { XCTAssertEqual(Double(y.data[r * 37 + j]), exp(row[j] - m) / total, accuracy: 1e-7) }
        }
    }

    func testLayoutHelpers() {
        let x = random([2, 3, 4, 5], seed: 10)
        let t = x.nchwToTokens()
        XCTAssertEqual(t.shape, [2, 20, 3])
        let tokenIndex = (1 * 20 + 7) * 3 + 2, pixelIndex = ((1 * 3 + 2) * 4 + 1) * 5 + 2
        XCTAssertEqual(t.data[tokenIndex], x.data[pixelIndex])
        XCTAssertEqual(t.tokensToNCHW(height: 4, width: 5), x)
        // Whole 16x16 blocks (the vector path) and the rows and columns left over.
        let big = random([2, 37, 6, 7], seed: 15), tokens = big.nchwToTokens()
        for (b, c, p) in [(0, 0, 0), (1, 36, 41), (0, 17, 33), (1, 5, 40), (0, 33, 2)] {
            XCTAssertEqual(tokens.data[(b * 42 + p) * 37 + c], big.data[(b * 37 + c) * 42 + p])
        }
        XCTAssertEqual(tokens.tokensToNCHW(height: 6, width: 7), big)
        let up = x.upsampledNearest(height: 8, width: 10)
        let upIndex = ((1 * 3 + 2) * 8 + 5) * 10 + 9, sourceIndex = ((1 * 3 + 2) * 4 + 2) * 5 + 4
        XCTAssertEqual(up.data[upIndex], x.data[sourceIndex])
        let cat = Tensor.concatenate([x, x.channels(1..<3)])
        XCTAssertEqual(cat.shape, [2, 5, 4, 5])
        XCTAssertEqual(cat.channels(3..<5), x.channels(1..<3))
        XCTAssertEqual(cat.channels(0..<3), x)
    }

    func testActivations() {
        XCTAssertEqual(Activation.gelu(1), 0.8413447, accuracy: 1e-6)
        let quick: Float = 1 / (1 + exp(-1.702)), silu: Float = -2 / (1 + exp(2))
        XCTAssertEqual(Activation.quickGelu(1), quick, accuracy: 1e-6)
        XCTAssertEqual(Activation.silu(-2), silu, accuracy: 1e-6)
        let x = Tensor(shape: [1, 4], data: [1, 2, 3, -1])
        // The vectorised GEGLU uses a polynomial erf (|error| ≤ 1.5e-7).
        let expected = Tensor(shape: [1, 2], data: [1 * Activation.gelu(3), 2 * Activation.gelu(-1)])
        XCTAssertLessThanOrEqual(geglu(x).maxAbsDifference(expected), 1e-6)
        let wide = Tensor(shape: [3, 2 * 40], data: (0..<240).map { Float($0 % 37) / 6 - 3 })
        var reference = [Float]()
        for r in 0..<3 { for i in 0..<40 { reference.append(wide.data[r * 80 + i] * Activation.gelu(wide.data[r * 80 + 40 + i])) } }
        XCTAssertLessThanOrEqual(geglu(wide).maxAbsDifference(Tensor(shape: [3, 40], data: reference)), 2e-6)
        let lin = linear(Tensor(shape: [1, 2], data: [1, 2]), weight: Tensor(shape: [3, 2], data: [1, 0, 0, 1, 1, 1]),
                         bias: Tensor(shape: [3], data: [0.5, 0, -1]))
        XCTAssertEqual(lin.data, [1.5, 2, 2])
    }
}
