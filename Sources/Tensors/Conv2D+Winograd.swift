import CKernels
import Synchronization

extension Compute {
    /// Floats of transformed input and output (V and M) a Winograd convolution holds at once
    /// (default 12 Mi, ~48 MB): bounds its scratch memory whatever the image size.
    nonisolated(unsafe) public static var winogradScratchFloats = 12 << 20

    /// Whether 3x3 stride-1 convolutions on planes of at least 32x32 pixels may use float32
    /// Winograd F(4x4, 3x3) (default on): a quarter of the multiplies of the direct method, with
    /// errors of up to ~5e-6 of the output's largest value instead of ~1e-7 (`KernelTests`).
    /// Which layers take it at which precision: `WinogradUse`.
    nonisolated(unsafe) public static var winograd = true

    /// The convolutions that go through Winograd: 3x3, stride 1, wide enough channels
    /// for the 36 products to be worth their transforms, and enough pixels for the per-call
    /// weight transform to be small beside the products.
    static func usesWinograd(channels: Int, outChannels: Int, kernel: (Int, Int), stride: Int,
                             outputPixels: Int) -> Bool {
        winograd && kernel == (3, 3) && stride == 1
            && min(channels, outChannels) >= 16 && outputPixels >= 32 * 32
    }
}

/// When a 3x3 stride-1 convolution on a large enough plane (`Compute.winograd`) runs as float32
/// Winograd F(4x4, 3x3).
public enum WinogradUse: Sendable {
    /// At fp32 precision only, the weight transformed in every call (the default).
    case atFP32
    /// At any precision, the weight transformed in every call: layers on large planes, where
    /// the transform is small beside the products (the VAE).
    case anyPrecision
    /// At any precision, the transformed weight made on first use and kept (4x the float32
    /// weight's memory): layers called often on small planes, where transforming every call
    /// would cost a sizeable share of the call (the UNet's 64x64 and 32x32 levels). At bf16 this
    /// replaces the direct bf16 product: measured faster there, and float32 apart from the
    /// weight's bf16 rounding (a float32 weight is rounded too, so a layer computes the same
    /// whether its weight was packed at load or not).
    case cached(WinogradCache)

    /// A model layer's use: `.anyPrecision` for layers that run on large planes (the VAE's),
    /// else `.cached` with a cache of its own (stays empty unless the layer's shape and planes
    /// qualify).
    public static func layer(onLargePlanes: Bool) -> WinogradUse {
        onLargePlanes ? .anyPrecision : .cached(WinogradCache())
    }

    func applies(weightIsPacked: Bool) -> Bool {
        switch self {
        case .atFP32: return !weightIsPacked && Compute.precision == .fp32
        case .anyPrecision: return !weightIsPacked
        case .cached: return true
        }
    }
}

/// A 3x3 convolution's weight in the Winograd domain: U[α] = G g Gᵀ for the 36 points α of the
/// 6x6 transformed tile, each an out x in matrix; as plain floats (`sgemm` packs them block by
/// block, the cheaper choice for a weight used once), or, when it is kept, packed once for the own
/// float32 GEMM where that runs (`Compute.ownFloat32GEMM`).
public final class WinogradWeight: @unchecked Sendable {
    public let outChannels: Int, channels: Int
    private let packed: UnsafeMutablePointer<UInt32>?
    private let pointCount: Int
    private let floats: UnsafeMutablePointer<Float>?

    /// Transforms `weight` [out, in, 3, 3], or its bf16-rounded values with `roundedToBF16`;
    /// packs the result with `kept`.
    init(_ weight: UnsafePointer<Float>, outChannels cout: Int, channels cin: Int, roundedToBF16: Bool = false,
         kept: Bool = false) {
        outChannels = cout
        channels = cin
        var rounded: UnsafeMutablePointer<Float>?
        if roundedToBF16 {
            rounded = .allocate(capacity: cout * cin * 9)
            for i in 0..<(cout * cin * 9) { rounded![i] = pk_round_bf16(weight[i]) }
        }
        defer { rounded?.deallocate() }
        let weight = UnsafePointer(rounded) ?? weight
        let u = UnsafeMutablePointer<Float>.allocate(capacity: 36 * cout * cin)
        let parts = min(cout, 4 * Compute.threads)
        Compute.parallelFor(parts) { part in
            let first = cout * part / parts, last = cout * (part + 1) / parts
            pk_winograd_weights(weight, cout, cin, first, last - first, u)
        }
        guard kept && Compute.ownFloat32GEMM else {
            floats = u
            packed = nil
            pointCount = 0
            return
        }
        let count = pk_packed_a_count(PK_F32, cout, cin)
        let panels = UnsafeMutablePointer<UInt32>.allocate(capacity: 36 * count)
        Compute.parallelFor(36) { point in
            pk_pack_a(PK_F32, 0, cout, cin, u + point * cout * cin, cin, panels + point * count)
        }
        u.deallocate()
        floats = nil
        packed = panels
        pointCount = count
    }

    /// Transforms a weight packed for the own GEMM ([out, in·9]), from the values its
    /// products use (bf16-rounded for a bf16 weight), to be kept.
    convenience init(_ weight: PackedWeight) {
        precondition(weight.operand == .left && weight.shape.count == 4 && weight.shape[2...] == [3, 3])
        let w = UnsafeMutablePointer<Float>.allocate(capacity: weight.rows * weight.columns)
        defer { w.deallocate() }
        pk_unpack_a(weight.format, weight.rows, weight.columns, weight.panels, w, weight.columns)
        self.init(w, outChannels: weight.rows, channels: weight.shape[1], kept: true)
    }

    deinit {
        packed?.deallocate()
        floats?.deallocate()
    }

    /// Bytes held.
    public var bytes: Int {
        packed != nil ? 36 * pointCount * MemoryLayout<UInt32>.size : 36 * outChannels * channels * 4
    }

    /// c = U[point] · b for `n` columns of b; single-threaded (callers run one point per worker).
    func product(point: Int, n: Int, b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if let packed {
            pk_gemm_packed_a(PK_F32, 0, outChannels, n, channels, 1, packed + point * pointCount, b, ldb, 0, c, ldc)
        } else {
            sgemm(m: outChannels, n: n, k: channels, a: floats! + point * outChannels * channels, lda: channels,
                  b: b, ldb: ldb, c: c, ldc: ldc)
        }
    }
}

/// Where a layer keeps its `WinogradWeight` once made (`WinogradUse.cached`): one of the
/// float32 weight, one of its bf16-rounded values (what a bf16 layer computes with), each made
/// on first use. Safe to share between threads.
public final class WinogradCache: Sendable {
    private let stored = Mutex<(exact: WinogradWeight?, rounded: WinogradWeight?)>((nil, nil))

    public init() {}

    /// The kept weight of the bf16-rounded values or of the float32 ones, made by `make` on
    /// first use.
    func weight(roundedToBF16: Bool, _ make: () -> WinogradWeight) -> WinogradWeight {
        stored.withLock { kept in
            if let made = roundedToBF16 ? kept.rounded : kept.exact { return made }
            let made = make()
            if roundedToBF16 { kept.rounded = made } else { kept.exact = made }
            return made
        }
    }

    /// Bytes of the kept weights (0 before first use).
    public var bytes: Int { stored.withLock { ($0.exact?.bytes ?? 0) + ($0.rounded?.bytes ?? 0) } }
}

/// Winograd F(4x4, 3x3) convolution of `n` NCHW images with a transformed weight: chunks of
/// whole tile rows (over all images) go through the input transform, 36 single-threaded GEMMs
/// U[α] · V[α] split over the workers, and the output transform with the bias.
func winogradConvolution(_ input: UnsafePointer<Float>, n: Int, height h: Int, width w: Int,
                         weight u: WinogradWeight, padding: Padding2D, outHeight hout: Int, outWidth wout: Int,
                         bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>) {
    let (cin, cout) = (u.channels, u.outChannels)
    let tilesX = (wout + 3) / 4, tilesY = (hout + 3) / 4
    let tileRows = n * tilesY
    let rowsPerChunk = max(1, min(tileRows, Compute.winogradScratchFloats / (36 * (cin + cout) * tilesX)))
    let v = UnsafeMutablePointer<Float>.allocate(capacity: 36 * cin * rowsPerChunk * tilesX)
    let m = UnsafeMutablePointer<Float>.allocate(capacity: 36 * cout * rowsPerChunk * tilesX)
    defer { v.deallocate(); m.deallocate() }
    for r0 in stride(from: 0, to: tileRows, by: rowsPerChunk) {
        let rows = min(rowsPerChunk, tileRows - r0), tiles = rows * tilesX
        Compute.parallelFor(rows * cin) { job in
            let (r, c) = (job / cin, job % cin)
            let (image, tileRow) = ((r0 + r) / tilesY, (r0 + r) % tilesY)
            pk_winograd_input(input + (image * cin + c) * h * w, 1, h, w, padding.top, padding.left, tileRow, tilesX,
                              v + c * tiles + r * tilesX, tiles, cin * tiles)
        }
        Compute.withSingleThreadedBLAS {
            Compute.parallelFor(36) { point in
                u.product(point: point, n: tiles, b: v + point * cin * tiles, ldb: tiles,
                          c: m + point * cout * tiles, ldc: tiles)
            }
        }
        Compute.parallelFor(rows * cout) { job in
            let (r, c) = (job / cout, job % cout)
            let (image, tileRow) = ((r0 + r) / tilesY, (r0 + r) % tilesY)
            pk_winograd_output(m + c * tiles + r * tilesX, tiles, cout * tiles, 1, tileRow, tilesX, hout, wout,
                               bias.map { $0 + c }, output + (image * cout + c) * hout * wout)
        }
    }
}
