import CKernels
import Tensors
import XCTest

/// The own GEMM in both formats against a float64 product of the same operands (bf16-rounded in
/// the bf16 format): only the float32 summation order may differ, so the tolerance is tight.
final class OwnGemmTests: XCTestCase {
    /// An operand value as the format multiplies it.
    private func rounded(_ x: Float, _ format: pk_format) -> Double {
        Double(format == PK_BF16 ? pk_round_bf16(x) : x)
    }

    private func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2000) / 1000 - 1
        }
    }

    /// Runs one product through `pk_gemm` and checks every element.
    private func check(_ format: pk_format, m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Float,
                       beta: Float, file: StaticString = #filePath, line: UInt = #line) {
        let (lda, ldb, ldc) = (transA ? m + 3 : k + 1, transB ? k + 2 : n + 5, n + 7)
        let a = values((transA ? k : m) * lda, seed: 1), b = values((transB ? n : k) * ldb, seed: 2)
        let c0 = values(m * ldc, seed: 3)
        var c = c0
        pk_gemm(format, transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, &c, ldc)
        var worst: Double = 0
        for i in 0..<m {
            for j in 0..<n {
                var s: Double = 0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p]
                    let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += rounded(x, format) * rounded(y, format)
                }
                let expected = Double(alpha) * s + (beta == 0 ? 0 : Double(beta) * Double(c0[i * ldc + j]))
                worst = max(worst, abs(expected - Double(c[i * ldc + j])))
            }
            // Columns past n belong to someone else.
            for j in n..<ldc where c[i * ldc + j] != c0[i * ldc + j] {
                XCTFail("wrote outside the matrix at (\(i), \(j))", file: file, line: line)
                return
            }
        }
        XCTAssertLessThanOrEqual(worst, 2e-6 * Double(k).squareRoot() * 4,
                                 "m \(m) n \(n) k \(k) transA \(transA) transB \(transB)", file: file, line: line)
    }

    private func checkShapes(_ format: pk_format) {
        // Edges in every dimension, K odd, K across several blocks, M across blocks, N above one panel.
        for (m, n, k) in [(1, 1, 1), (12, 32, 2), (13, 33, 3), (7, 40, 41), (29, 80, 385), (250, 17, 64),
                          (37, 3100, 9), (5, 16, 800)] {
            for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                check(format, m: m, n: n, k: k, transA: transA, transB: transB, alpha: 0.7, beta: 0)
            }
            check(format, m: m, n: n, k: k, transA: false, transB: false, alpha: 1, beta: 0.5)
        }
    }

    func testFastKernelMatchesDefinition() throws {
        try XCTSkipUnless(Compute.hasFastBF16, "this CPU has no AVX512-BF16")
        checkShapes(PK_BF16)
    }

    func testFastFloat32KernelMatchesDefinition() throws {
        try XCTSkipUnless(pk_gemm_fast(PK_F32) != 0, "this CPU has no AVX-512")
        checkShapes(PK_F32)
    }

    func testPortableKernelsMatchDefinition() {
        pk_gemm_force_portable(1)
        defer { pk_gemm_force_portable(0) }
        checkShapes(PK_BF16)
        checkShapes(PK_F32)
    }

    func testRoundingIsToNearestEven() {
        XCTAssertEqual(pk_round_bf16(1 + 1.0 / 256), 1)            // a tie: down to the even 1.0
        XCTAssertEqual(pk_round_bf16(1 + 3.0 / 256), 1 + 4.0 / 256)  // a tie: up to the even neighbour
        XCTAssertEqual(pk_round_bf16(1 + 1.5 / 256), 1 + 2.0 / 256)
        XCTAssertTrue(pk_round_bf16(.nan).isNaN)
        XCTAssertEqual(pk_round_bf16(.infinity), .infinity)
    }

    /// The threaded entry points (`gemm` at bf16, `sgemm` on the own kernel) split by columns or
    /// rows and must agree with the single-threaded kernel exactly (same blocks along K, so the
    /// same sums).
    func testThreadedSplitAgrees() {
        let (savedPrecision, savedOwn) = (Compute.precision, Compute.ownFloat32GEMM)
        Compute.precision = .bf16
        Compute.ownFloat32GEMM = true
        defer { (Compute.precision, Compute.ownFloat32GEMM) = (savedPrecision, savedOwn) }
        for (m, n, k) in [(300, 1000, 70), (700, 40, 80)] {
            let a = values(m * k, seed: 4), b = values(k * n, seed: 5)
            var threaded = [Float](repeating: 0, count: m * n), single = threaded
            gemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &threaded, ldc: n)
            pk_gemm(PK_BF16, 0, 0, m, n, k, 1, a, k, b, n, 0, &single, n)
            XCTAssertEqual(threaded, single)
            sgemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &threaded, ldc: n)
            pk_gemm(PK_F32, 0, 0, m, n, k, 1, a, k, b, n, 0, &single, n)
            XCTAssertEqual(threaded, single, "float32")
        }
    }
}

extension OwnGemmTests {
    /// A pre-packed op(A) gives exactly the product of packing it on the fly: several K and M
    /// blocks with ragged ends, and column splits over the workers.
    func testPrepackedLeftOperandAgrees() {
        for format in [PK_BF16, PK_F32] {
            checkPrepackedLeftOperand(format)
        }
    }

    private func checkPrepackedLeftOperand(_ format: pk_format) {
        for (m, n, k, transB) in [(500, 70, 1000, false), (13, 3100, 41, true), (250, 64, 385, false), (7, 5, 3, true)] {
            let ldb = transB ? k : n
            let a = values(m * k, seed: 16), b = values((transB ? n : k) * ldb, seed: 17)
            var packed = [UInt32](repeating: 0, count: pk_packed_a_count(format, m, k))
            pk_pack_a(format, 0, m, k, a, k, &packed)
            var direct = [Float](repeating: 0, count: m * n), viaPacked = direct
            pk_gemm(format, 0, transB ? 1 : 0, m, n, k, 0.5, a, k, b, ldb, 0, &direct, n)
            pk_gemm_packed_a(format, transB ? 1 : 0, m, n, k, 0.5, packed, b, ldb, 0, &viaPacked, n)
            XCTAssertEqual(direct, viaPacked, "m \(m) n \(n) k \(k)")
            // Through the Swift entry point (split by columns over the workers).
            let weight = PackedWeight(Tensor(shape: [m, k], data: a), as: .left, float32: format == PK_F32)
            var threaded = [Float](repeating: 0, count: m * n)
            gemm(packed: weight, transB: transB, n: n, alpha: 0.5, b: b, ldb: ldb, c: &threaded, ldc: n)
            XCTAssertEqual(threaded, direct, "gemm(packed:) m \(m) n \(n) k \(k)")
        }
    }

    /// Layers with packed weights compute exactly what the bf16 path computes from float32
    /// weights, in convolutions (implicit, im2col and pointwise) and linear layers.
    func testPackedLayerWeightsAgree() {
        let saved = Compute.precision
        Compute.precision = .bf16
        defer { Compute.precision = saved }
        let x = Tensor(shape: [2, 8, 12, 64], data: values(2 * 8 * 12 * 64, seed: 18))
        for (cout, k, stride, pad) in [(16, 3, 1, 1), (12, 3, 2, 1), (20, 1, 1, 0), (5, 3, 1, 0)] {
            let weight = Tensor(shape: [cout, 8, k, k], data: values(cout * 8 * k * k, seed: 19))
            let packed = LayerWeight.packed(PackedWeight(weight, as: .left))
            XCTAssertEqual(conv2d(x, weight: packed, bias: nil, stride: stride, padding: .uniform(pad)),
                           conv2d(x, weight: weight, bias: nil, stride: stride, padding: .uniform(pad)),
                           "cout \(cout) k \(k) stride \(stride)")
        }
        for rows in [3, 200] {
            let input = Tensor(shape: [rows, 96], data: values(rows * 96, seed: 20))
            let weight = Tensor(shape: [72, 96], data: values(72 * 96, seed: 21))
            XCTAssertEqual(linear(input, weight: .packed(PackedWeight(weight, as: .transposedRight)), bias: nil),
                           linear(input, weight: weight, bias: nil), "\(rows) rows")
        }
        // Built at bf16, a layer weight is packed, in half the bytes (K a whole number of blocks).
        let weight = Tensor(shape: [48, 128, 3, 3], data: values(48 * 1152, seed: 22))
        guard case .packed(let p) = LayerWeight(weight, as: .left) else { return XCTFail("not packed at bf16") }
        XCTAssertEqual(p.bytes, weight.count * 2)
    }

    /// A pre-packed op(B) gives exactly the product of packing it on the fly.
    func testPrepackedOperandAgrees() {
        for format in [PK_BF16, PK_F32] {
            for (m, n, k, transB) in [(30, 40, 770, false), (13, 3100, 41, true), (64, 80, 9, true)] {
                let ldb = transB ? k : n
                let a = values(m * k, seed: 6), b = values((transB ? n : k) * ldb, seed: 7)
                var packed = [UInt32](repeating: 0, count: pk_packed_b_count(format, k, n))
                pk_pack_b(format, transB ? 1 : 0, k, n, b, ldb, &packed)
                var direct = [Float](repeating: 0, count: m * n), viaPacked = direct
                pk_gemm(format, 0, transB ? 1 : 0, m, n, k, 0.5, a, k, b, ldb, 0, &direct, n)
                pk_gemm_packed_b(format, 0, m, n, k, 0.5, a, k, packed, 0, &viaPacked, n)
                XCTAssertEqual(direct, viaPacked, "m \(m) n \(n) k \(k)")
            }
        }
    }

    /// On the own float32 kernel, layers agree with OpenBLAS to float32 rounding: attention
    /// (keys and values packed per block, whole rows and blocks of 32 keys), convolutions
    /// (implicit, im2col, pointwise, Winograd) and linear layers, also with float32-packed weights.
    func testOwnFloat32LayersAgreeWithOpenBLAS() throws {
        try XCTSkipUnless(pk_gemm_fast(PK_F32) != 0, "this CPU has no AVX-512")
        let savedOwn = Compute.ownFloat32GEMM
        defer { Compute.ownFloat32GEMM = savedOwn }
        func both(_ body: () -> Tensor) -> (own: Tensor, blas: Tensor) {
            Compute.ownFloat32GEMM = true
            let own = body()
            Compute.ownFloat32GEMM = false
            return (own, body())
        }
        let (b, nq, nk, heads, d) = (2, 100, 77, 4, 40)
        let q = Tensor(shape: [b, nq, heads * d], data: values(b * nq * heads * d, seed: 30))
        let k = Tensor(shape: [b, nk, heads * d], data: values(b * nk * heads * d, seed: 31))
        let v = Tensor(shape: [b, nk, heads * d], data: values(b * nk * heads * d, seed: 32))
        let savedBlock = Compute.attentionKeyBlock
        defer { Compute.attentionKeyBlock = savedBlock }
        for block in [nil, 32] {
            Compute.attentionKeyBlock = block
            let r = both { scaledDotProductAttention(q: q, k: k, v: v, heads: heads) }
            XCTAssertLessThan(r.own.maxAbsDifference(r.blas), 1e-5 * r.blas.maxAbs, "key block \(block ?? 0)")
        }
        let x = Tensor(shape: [2, 24, 40, 64], data: values(2 * 24 * 40 * 64, seed: 33))
        for (cout, size, stride, pad) in [(16, 3, 1, 1), (12, 3, 2, 1), (20, 1, 1, 0), (5, 3, 1, 0), (32, 3, 1, 1)] {
            let weight = Tensor(shape: [cout, 24, size, size], data: values(cout * 24 * size * size, seed: 34))
            let r = both { conv2d(x, weight: weight, bias: nil, stride: stride, padding: .uniform(pad)) }
            XCTAssertLessThan(r.own.maxAbsDifference(r.blas), 1e-5 * r.blas.maxAbs, "cout \(cout) k \(size) stride \(stride)")
            Compute.ownFloat32GEMM = true
            let winograd = size == 3 && stride == 1 && cout >= 16  // (24 input channels, over 32x32 pixels)
            if !winograd {
                let packed = conv2d(x, weight: .packed(PackedWeight(weight, as: .left, float32: true)), bias: nil,
                                    stride: stride, padding: .uniform(pad))
                XCTAssertEqual(packed, r.own, "float32-packed weight, cout \(cout) k \(size) stride \(stride)")
            }
        }
        let input = Tensor(shape: [300, 96], data: values(300 * 96, seed: 35))
        let weight = Tensor(shape: [72, 96], data: values(72 * 96, seed: 36))
        let r = both { linear(input, weight: weight, bias: nil) }
        XCTAssertLessThan(r.own.maxAbsDifference(r.blas), 1e-5 * r.blas.maxAbs, "linear")
        Compute.ownFloat32GEMM = true
        XCTAssertEqual(linear(input, weight: .packed(PackedWeight(weight, as: .transposedRight, float32: true)), bias: nil),
                       r.own, "linear, float32-packed weight")
    }

    /// Attention at bf16 stays close to fp32 (scores and probabilities rounded to bf16).
    func testAttentionAtBF16() {
        let (b, nq, nk, heads, d) = (2, 100, 77, 4, 40)
        let q = Tensor(shape: [b, nq, heads * d], data: values(b * nq * heads * d, seed: 8))
        let k = Tensor(shape: [b, nk, heads * d], data: values(b * nk * heads * d, seed: 9))
        let v = Tensor(shape: [b, nk, heads * d], data: values(b * nk * heads * d, seed: 10))
        let reference = scaledDotProductAttention(q: q, k: k, v: v, heads: heads)
        let saved = Compute.precision
        Compute.precision = .bf16
        defer { Compute.precision = saved }
        let result = scaledDotProductAttention(q: q, k: k, v: v, heads: heads)
        XCTAssertLessThan(result.maxAbsDifference(reference), 0.01 * reference.maxAbs)
        XCTAssertGreaterThan(result.maxAbsDifference(reference), 0)  // the bf16 path really ran

        // Blocks of 32 keys (32 + 32 + 13): the online softmax with keys and values packed per block.
        let savedBlock = Compute.attentionKeyBlock
        Compute.attentionKeyBlock = 32
        defer { Compute.attentionKeyBlock = savedBlock }
        let blocked = scaledDotProductAttention(q: q, k: k, v: v, heads: heads)
        XCTAssertLessThan(blocked.maxAbsDifference(reference), 0.01 * reference.maxAbs)
        XCTAssertLessThan(blocked.maxAbsDifference(result), 0.01 * reference.maxAbs)
    }
}

extension OwnGemmTests {
    /// The implicit-im2col convolution against a direct float64 convolution of the same values
    /// (bf16-rounded in that format): whole 32-pixel panels (the vector gather), ragged widths and
    /// stride 2 (the scalar gather), padding on every side, a band of output rows.
    func testImplicitConvolution() {
        for format in [PK_BF16, PK_F32] {
            checkImplicitConvolution(format)
        }
    }

    private func checkImplicitConvolution(_ format: pk_format) {
        for (cin, cout, h, w, k, stride, pad) in [(3, 5, 9, 64, 3, 1, 1), (7, 13, 6, 37, 3, 1, 1), (4, 6, 10, 20, 3, 2, 1),
                                                  (5, 4, 5, 32, 1, 1, 0), (2, 3, 8, 64, 3, 1, 0)] {
            let hout = (h + 2 * pad - k) / stride + 1, wout = (w + 2 * pad - k) / stride + 1
            let input = values(cin * h * w, seed: 11), weight = values(cout * cin * k * k, seed: 12)
            let (first, rows) = (1, hout - 2)
            var out = [Float](repeating: .nan, count: cout * rows * wout), fromPacked = out
            pk_conv(format, input, cin, h, w, weight, nil, cout, k, k, stride, pad, pad, wout, first, rows, &out, rows * wout)
            var packed = [UInt32](repeating: 0, count: pk_packed_a_count(format, cout, cin * k * k))
            pk_pack_a(format, 0, cout, cin * k * k, weight, cin * k * k, &packed)
            pk_conv(format, input, cin, h, w, nil, packed, cout, k, k, stride, pad, pad, wout, first, rows, &fromPacked,
                    rows * wout)
            XCTAssertEqual(fromPacked, out, "pre-packed weight")
            var worst: Double = 0
            for co in 0..<cout {
                for y in first..<(first + rows) {
                    for x in 0..<wout {
                        var s: Double = 0
                        for ci in 0..<cin {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = y * stride - pad + ky, ix = x * stride - pad + kx
                                    guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
                                    s += rounded(input[(ci * h + iy) * w + ix], format)
                                        * rounded(weight[((co * cin + ci) * k + ky) * k + kx], format)
                                }
                            }
                        }
                        worst = max(worst, abs(s - Double(out[co * rows * wout + (y - first) * wout + x])))
                    }
                }
            }
            XCTAssertLessThan(worst, 1e-5, "cin \(cin) cout \(cout) \(h)x\(w) k \(k) stride \(stride)")
        }
    }

    /// conv2d at bf16 (implicit path at width 64) stays near fp32.
    func testConv2DAtBF16() {
        let x = Tensor(shape: [2, 8, 12, 64], data: values(2 * 8 * 12 * 64, seed: 13))
        let weight = Tensor(shape: [16, 8, 3, 3], data: values(16 * 8 * 9, seed: 14))
        let bias = Tensor(shape: [16], data: values(16, seed: 15))
        let reference = conv2d(x, weight: weight, bias: bias, padding: 1)
        let saved = Compute.precision
        Compute.precision = .bf16
        defer { Compute.precision = saved }
        let result = conv2d(x, weight: weight, bias: bias, padding: 1)
        XCTAssertLessThan(result.maxAbsDifference(reference), 0.01 * reference.maxAbs)
        XCTAssertGreaterThan(result.maxAbsDifference(reference), 0)
    }
}
