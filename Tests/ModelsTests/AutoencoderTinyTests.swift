import Foundation
import Models
import Tensors
import Weights
import XCTest

/// TAESD (`AutoencoderTiny`): parity with diffusers in both file layouts, the loader's layouts and
/// errors, and tiles equal to the whole pass (see tools/reference/make_taesd_fixtures.py).
final class AutoencoderTinyTests: XCTestCase {
    private static let folder = Fixtures.model("tiny-taesd/diffusers")
    private static let separate = Fixtures.model("tiny-taesd/separate")

    private func golden(_ name: String) throws -> Tensor {
        try Fixtures.golden("taesd", "taesd.safetensors").tensor(name)
    }

    /// The encode goldens' input, regenerated: torch.rand([1, 3, 128, 192], seed 12) * 2 − 1.
    private func goldenImage() throws -> Tensor {
        var g = TorchGenerator(seed: 12)
        let image = g.rand([1, 3, 128, 192]) * 2 - 1
        XCTAssertEqual(image.cropped(rows: 0..<1, columns: 0..<192).data, try golden("image_row0").data,
                       "TorchGenerator.rand reproduces the golden image")
        return image
    }

    private func assertParityWithDiffusers(_ vae: AutoencoderTiny, _ what: String) throws {
        assertParity(vae.decode(try golden("latents")), try golden("decoded"), "\(what) decode")
        assertParity(try vae.encode(try goldenImage()), try golden("encoded"), "\(what) encode")
    }

    // MARK: - Parity

    func testDiffusersFolderMatchesDiffusers() throws {
        let vae = try AutoencoderTiny(contentsOf: Self.folder)
        XCTAssertTrue(vae.hasEncoder)
        XCTAssertEqual(vae.config.encoderBlockOutChannels, [16, 16, 16, 16])
        XCTAssertEqual(vae.scalingFactor, 1)
        XCTAssertEqual(vae.files.map(\.lastPathComponent), ["diffusion_pytorch_model.safetensors"])
        try assertParityWithDiffusers(vae, "diffusers folder")
    }

    func testSingleDiffusersFileUsesTheConfigBesideIt() throws {
        let vae = try AutoencoderTiny(contentsOf: Self.folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        try assertParityWithDiffusers(vae, "diffusers file")
    }

    func testSeparateFilesMatchDiffusersFromEitherFile() throws {
        for name in ["taesd_decoder.safetensors", "taesd_encoder.pth"] {
            let vae = try AutoencoderTiny(contentsOf: Self.separate.appendingPathComponent(name))
            XCTAssertTrue(vae.hasEncoder, name)
            XCTAssertEqual(vae.decoderFile.lastPathComponent, "taesd_decoder.safetensors")
            XCTAssertEqual(vae.encoderFile?.lastPathComponent, "taesd_encoder.pth")
            try assertParityWithDiffusers(vae, "separate files via \(name)")
        }
    }

    func testSeparateFilesFromAnA1111StyleFolder() throws {
        let dir = try temporaryCopy(["taesd_decoder.safetensors", "taesd_encoder.pth", "config.json"], from: Self.separate)
        let vae = try AutoencoderTiny(contentsOf: dir)
        XCTAssertTrue(vae.hasEncoder)
        assertParity(vae.decode(try golden("latents")), try golden("decoded"), "A1111 folder decode")
    }

    // MARK: - Loader errors

    private func temporaryCopy(_ names: [String], from source: URL) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("taesd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for name in names {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        return dir
    }

    private func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    func testDecoderWithoutEncoderDecodesAndRefusesToEncode() throws {
        let dir = try temporaryCopy(["taesd_decoder.safetensors", "config.json"], from: Self.separate)
        let vae = try AutoencoderTiny(contentsOf: dir.appendingPathComponent("taesd_decoder.safetensors"))
        XCTAssertFalse(vae.hasEncoder)
        XCTAssertNil(vae.encoderFile)
        assertParity(vae.decode(try golden("latents")), try golden("decoded"), "decoder-only decode")
        let text = message { _ = try vae.encode(try goldenImage()) }
        XCTAssertTrue(text.contains("encoder weights are missing"), text)
        XCTAssertTrue(text.contains(dir.appendingPathComponent("taesd_encoder.safetensors").path), text)
        XCTAssertTrue(text.contains(dir.appendingPathComponent("taesd_encoder.pth").path), text)
        XCTAssertThrowsError(try vae.encode(try goldenImage(), tiling: AutoencoderTinyTiling()))
    }

    func testEncoderWithoutDecoderIsRefused() throws {
        let dir = try temporaryCopy(["taesd_encoder.pth", "config.json"], from: Self.separate)
        let text = message { _ = try AutoencoderTiny(contentsOf: dir.appendingPathComponent("taesd_encoder.pth")) }
        XCTAssertTrue(text.contains(dir.appendingPathComponent("taesd_decoder.pth").path), text)
        XCTAssertTrue(text.contains("no weights found"), text)
    }

    func testTruncatedFileIsRefusedWithItsPath() throws {
        let dir = try temporaryCopy(["taesd_decoder.safetensors", "config.json"], from: Self.separate)
        let file = dir.appendingPathComponent("taesd_decoder.safetensors")
        let bytes = try Data(contentsOf: file)
        try bytes.prefix(bytes.count / 2).write(to: file)
        let text = message { _ = try AutoencoderTiny(contentsOf: file) }
        XCTAssertTrue(text.contains(file.path), text)
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: file)) { XCTAssertTrue($0 is WeightsError, "\($0)") }
    }

    /// The folder's tensors, with `change` applied, written as a lone diffusers-layout file.
    private func modifiedDiffusersFile(_ change: (inout [(name: String, tensor: Tensor)]) throws -> Void) throws -> URL {
        let file = try SafeTensorsFile(url: Self.folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        var tensors = try file.names.map { (name: $0, tensor: try file.tensor($0)) }
        try change(&tensors)
        let dir = try temporaryCopy(["config.json"], from: Self.folder)
        let url = dir.appendingPathComponent("taesd.safetensors")
        try SafeTensorsWriter.write(tensors, dtype: .f32, to: url)
        return url
    }

    func testSixteenLatentChannelsAreRefused() throws {
        let url = try modifiedDiffusersFile { tensors in
            let i = tensors.firstIndex { $0.name == "decoder.layers.0.weight" }!
            tensors[i].tensor = Tensor(zeros: [16, 16, 3, 3])
        }
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: url)) { error in
            XCTAssertTrue(error is ModelError, "\(error)")
            XCTAssertTrue("\(error)".contains("16 latent channels"), "\(error)")
            XCTAssertTrue("\(error)".contains(url.path), "\(error)")
        }
        var config = AutoencoderTinyConfig()
        config.latentChannels = 16
        let weights = try WeightSet(url: url)
        XCTAssertThrowsError(try AutoencoderTiny(config: config, decoder: weights, encoder: weights)) { error in
            XCTAssertTrue("\(error)".contains("latent_channels 16"), "\(error)")
        }
    }

    func testMissingTensorWrongShapeAndNonFiniteValuesAreRefused() throws {
        let missing = try modifiedDiffusersFile { $0.removeAll { $0.name == "decoder.layers.4.conv.2.weight" } }
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: missing)) { error in
            XCTAssertTrue("\(error)".contains("decoder.layers.4.conv.2.weight") && "\(error)".contains(missing.path), "\(error)")
        }
        let nan = try modifiedDiffusersFile { tensors in
            let i = tensors.firstIndex { $0.name == "encoder.layers.3.conv.4.bias" }!
            tensors[i].tensor.data[2] = .nan
        }
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: nan)) { error in
            XCTAssertTrue("\(error)".contains("non-finite") && "\(error)".contains(nan.path)
                          && "\(error)".contains("encoder.layers.3.conv.4.bias"), "\(error)")
        }
        // Without a config.json beside it, a lone file loads with TAESD's 64-channel defaults.
        let lone = try modifiedDiffusersFile { _ in }
        try FileManager.default.removeItem(at: lone.deletingLastPathComponent().appendingPathComponent("config.json"))
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: lone)) { error in
            guard case WeightsError.shapeMismatch(_, _, let file, let stored, let expected)? = error as? WeightsError else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(file, lone.path)
            XCTAssertEqual(stored, [16, 4, 3, 3])
            XCTAssertEqual(expected, [64, 4, 3, 3])
        }
    }

    func testForeignFilesAreRefused() throws {
        let kl = Fixtures.model("single-file/tiny-pano-vae.safetensors")
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: kl)) { error in
            XCTAssertTrue("\(error)".contains("not a TAESD"), "\(error)")
        }
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: Fixtures.model("tiny-sd1/vae"))) { error in
            XCTAssertTrue("\(error)".contains("AutoencoderKL"), "\(error)")
        }
        XCTAssertThrowsError(try AutoencoderTiny(contentsOf: Self.folder.appendingPathComponent("nothing.safetensors")))
    }

    func testScaleLatentsRoundTrips() throws {
        let vae = try AutoencoderTiny(contentsOf: Self.folder)
        let z = Tensor(shape: [1, 4, 1, 2], data: [-3, -1, 0, 0.5, 1, 2, 2.9, -2.9])
        XCTAssertEqual(vae.scaleLatents(z).data[2], 0.5)
        XCTAssertLessThanOrEqual(vae.unscaleLatents(vae.scaleLatents(z)).maxAbsDifference(z), 1e-6)
    }

    // MARK: - Tiling

    /// max|tiled − whole| / (max − min of whole), printed, and checked against `bound`.
    @discardableResult
    private func assertTiled(_ tiled: Tensor, _ whole: Tensor, _ bound: Float, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(tiled.shape, whole.shape, what, file: file, line: line)
        guard tiled.shape == whole.shape else { return .infinity }
        let range = whole.data.max()! - whole.data.min()!
        let relative = tiled.maxAbsDifference(whole) / range
        print("taesd \(what): max|tiled - whole| = \(tiled.maxAbsDifference(whole)) (\(relative) of the range \(range))")
        XCTAssertLessThanOrEqual(relative, bound, what, file: file, line: line)
        return relative
    }

    func testTiledDecodeEqualsWholeDecode() throws {
        let vae = try AutoencoderTiny(contentsOf: Self.folder)
        XCTAssertEqual(vae.receptivePadding.decoder, 19)
        XCTAssertEqual(vae.receptivePadding.encoder, 19)
        var g = TorchGenerator(seed: 21)
        let z = g.randn([2, 4, 40, 56])
        let whole = vae.decode(z)
        assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling(tileSize: 16)), whole, 1e-5, "decode, tiles 16, default padding")
        assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling(tileSize: 13)), whole, 1e-5, "decode, tiles 13, default padding")
        assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling()), whole, 1e-5, "decode, one tile")
        for padding in [4, 8, 12, 16] {  // for the record: seams with less context
            assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling(tileSize: 16, padding: padding)), whole, 1,
                        "decode, tiles 16, padding \(padding)")
        }
        let seams = assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling(tileSize: 16, padding: 0)), whole, 1,
                                "decode, tiles 16, padding 0")
        XCTAssertGreaterThan(seams, 1e-3, "tiles without context show seams (the tiling really cuts)")
        // Tiles handed out one by one cover the image once.
        var covered = 0
        vae.decodeTiles(z.batch(1), tiling: AutoencoderTinyTiling(tileSize: 16)) { tile, row, column in
            covered += tile.shape[2] * tile.shape[3]
            let part = whole.batch(1).cropped(rows: row..<(row + tile.shape[2]), columns: column..<(column + tile.shape[3]))
            XCTAssertLessThanOrEqual(tile.maxAbsDifference(part), 1e-4, "tile at \(row), \(column)")
        }
        XCTAssertEqual(covered, 320 * 448)
    }

    /// Columns `-k..<w+k` of `x` [B, C, H, W], wrapped.
    private func wrapped(_ x: Tensor, _ k: Int) -> Tensor {
        let w = x.shape[3]
        let left = x.cropped(rows: 0..<x.shape[2], columns: (w - k)..<w)
        let right = x.cropped(rows: 0..<x.shape[2], columns: 0..<k)
        return Tensor.concatenate([left, x, right], dimension: 3)
    }

    func testCircularTiledDecodeEqualsTheWrappedWholeDecode() throws {
        let vae = try AutoencoderTiny(contentsOf: Self.folder)
        var g = TorchGenerator(seed: 22)
        let z = g.randn([1, 4, 24, 40])
        let k = 24
        let reference = vae.decode(wrapped(z, k)).cropped(rows: 0..<192, columns: (8 * k)..<(8 * (k + 40)))
        assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling(tileSize: 16, circular: true)), reference, 1e-5,
                    "circular decode, tiles 16")
        assertTiled(vae.decode(z, tiling: AutoencoderTinyTiling(tileSize: 64, circular: true)), reference, 1e-5,
                    "circular decode, one tile")
        // The seam really joins: the circular result is not the plain one at the edges.
        XCTAssertGreaterThan(vae.decode(z).maxAbsDifference(reference), 1e-2)
    }

    func testTiledEncodeEqualsWholeEncode() throws {
        let vae = try AutoencoderTiny(contentsOf: Self.folder)
        var g = TorchGenerator(seed: 23)
        let image = g.rand([1, 3, 192, 320]) * 2 - 1
        let whole = try vae.encode(image)
        assertTiled(try vae.encode(image, tiling: AutoencoderTinyTiling(tileSize: 8)), whole, 1e-5, "encode, tiles 8")
        assertTiled(try vae.encode(image, tiling: AutoencoderTinyTiling(tileSize: 11)), whole, 1e-5, "encode, tiles 11")
        assertTiled(try vae.encode(image, tiling: AutoencoderTinyTiling(tileSize: 8, padding: 4)), whole, 1,
                    "encode, tiles 8, padding 4")
        let k = 24
        let reference = try vae.encode(wrapped(image, 8 * k)).cropped(rows: 0..<24, columns: k..<(k + 40))
        assertTiled(try vae.encode(image, tiling: AutoencoderTinyTiling(tileSize: 8, circular: true)), reference, 1e-5,
                    "circular encode, tiles 8")
        XCTAssertThrowsError(try vae.encode(g.rand([1, 3, 60, 64]), tiling: AutoencoderTinyTiling()))
    }

    // MARK: - Timing (opt-in)

    /// Set TAESD_TIMING to a full-size TAESD folder (make_taesd_fixtures.py --full-size) to time a
    /// 64x64-latent decode and a tiled 64x512-latent (4096x512) decode (TAESD_PRECISION=bf16 for
    /// bf16), and to measure tiled against whole decodes of the full-size architecture.
    func testTimingOfAFullSizeModel() throws {
        guard let path = ProcessInfo.processInfo.environment["TAESD_TIMING"] else {
            throw XCTSkip("set TAESD_TIMING to a full-size TAESD folder")
        }
        if let p = ProcessInfo.processInfo.environment["TAESD_PRECISION"], let precision = Precision(rawValue: p) {
            Compute.precision = precision
        }
        defer { Compute.precision = .fp32 }
        let vae = try AutoencoderTiny(contentsOf: URL(fileURLWithPath: path))
        var g = TorchGenerator(seed: 1)
        func cpuSeconds() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        func time(_ what: String, _ body: () throws -> Tensor) rethrows -> Tensor {
            let (start, cpu) = (Date(), cpuSeconds())
            let result = try body()
            print("taesd timing \(what) [\(Compute.precision), \(Compute.threads) threads]: "
                  + String(format: "%.2f s wall, %.2f s CPU", Date().timeIntervalSince(start), cpuSeconds() - cpu))
            return result
        }
        let wide = g.randn([1, 4, 64, 512])
        _ = time("tiled decode 64x512 latent (4096x512)") { vae.decode(wide, tiling: AutoencoderTinyTiling()) }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        print("taesd timing: peak RSS after the tiled decodes only: \(usage.ru_maxrss / 1024) MB")
        _ = time("tiled circular decode 64x512 latent") { vae.decode(wide, tiling: AutoencoderTinyTiling(circular: true)) }
        let small = g.randn([1, 4, 64, 64])
        _ = time("whole decode 64x64 latent (warm-up)") { vae.decode(small) }
        let whole = time("whole decode 64x64 latent") { vae.decode(small) }
        let tiled = time("tiled decode 64x64 latent") { vae.decode(small, tiling: AutoencoderTinyTiling()) }
        assertTiled(tiled, whole, Compute.precision == .fp32 ? 1e-5 : 1e-3, "full-size decode 64x64, default tiling")
        let pair = g.randn([1, 4, 64, 128])
        let pairWhole = time("whole decode 64x128 latent") { vae.decode(pair) }
        for padding in [nil, 16, 12, 8] as [Int?] {
            let tiles = time("tiled decode 64x128 latent, padding \(padding.map(String.init) ?? "default")") {
                vae.decode(pair, tiling: AutoencoderTinyTiling(padding: padding))
            }
            // At bf16 the convolutions Winograd does not take (the first and the last) run the
            // direct bf16 kernel, whose result depends a little on the plane width (tile vs whole).
            let bound: Float = padding != nil ? 1 : Compute.precision == .fp32 ? 1e-5 : 1e-3
            assertTiled(tiles, pairWhole, bound, "full-size decode 64x128, padding \(padding.map(String.init) ?? "default")")
        }
        let image = g.rand([1, 3, 512, 512]) * 2 - 1
        _ = try time("whole encode 512x512") { try vae.encode(image) }
        getrusage(RUSAGE_SELF.rawValue, &usage)
        print("taesd timing: peak RSS at the end: \(usage.ru_maxrss / 1024) MB")
    }
}
