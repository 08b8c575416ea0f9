import Foundation
import Imaging
import Models
import Renderer
import Tensors
import XCTest

/// Live previews: the linear latent-to-RGB map fitted to the model's VAE against the real decode,
/// against unfitted maps, its speed on a panorama canvas, and TAESD as the preview.
final class LatentPreviewTests: XCTestCase {
    /// RGB = the first three latent channels: what a map that knows nothing of the VAE shows.
    static let identity = LatentPreview(matrix: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], bias: [0, 0, 0])
    /// A1111's "Approx cheap" factors for SD 1.x's VAE (sd_vae_approx.cheap_approximation), rows R, G, B.
    static let sd15 = LatentPreview(matrix: [0.298, 0.187, -0.158, -0.184,
                                             0.207, 0.286, 0.189, -0.271,
                                             0.208, 0.173, 0.264, -0.473], bias: [0, 0, 0])

    /// Mean absolute difference in 0-255 levels.
    static func meanAbsoluteError(_ a: PreviewImage, _ b: PreviewImage) -> Double {
        precondition(a.width == b.width && a.height == b.height)
        return Double(zip(a.pixels, b.pixels).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }) / Double(a.pixels.count)
    }

    /// Renders `prompts` with `pipeline` and returns the final latents with their real decode
    /// downsampled 8x (area average).
    private func renders(_ pipeline: PanoramaPipeline, _ prompts: [String], steps: Int)
        throws -> [(latents: Tensor, target: PreviewImage)] {
        try prompts.enumerated().map { k, prompt in
            var s = PanoramaSettings(prompt: prompt, width: 768, height: 512)
            s.steps = steps
            s.guidanceScale = 5
            s.seed = UInt64(11 + k)
            var loop = try pipeline.denoisingLoop(s)
            while loop.next() != nil {}
            let decoded = PreviewImage(decoded: try pipeline.decode(loop.latents, circular: false))
            return (loop.latents, decoded.areaAverage(8))
        }
    }

    private func errors(_ preview: LatentPreview, _ cases: [(latents: Tensor, target: PreviewImage)]) -> Double {
        cases.map { Self.meanAbsoluteError(preview.image($0.latents), $0.target) }.reduce(0, +) / Double(cases.count)
    }

    func testFittedPreviewMatchesTheBundledModelsDecode() throws {
        let pipeline = try DefaultModelTests.pipeline()
        var start = Date()
        let preview = LatentPreview.fit(pipeline.model)
        let fitTime = Date().timeIntervalSince(start)
        let cases = try renders(pipeline, ["snowy mountains at sunset", "a calm sea under a starry night sky",
                                           "desert dunes at noon", "a pine forest by a lake at dawn"], steps: 12)
        let fitted = errors(preview, cases), identity = errors(Self.identity, cases), sd15 = errors(Self.sd15, cases)
        // the best any linear map can do: fitted on these very renders' decodes
        let decodes = try cases.map { try pipeline.decode($0.latents, circular: false) }
        let oracle = errors(LatentPreview.fit(latents: Tensor.concatenate(cases.map(\.latents), dimension: 0),
                                              images: Tensor.concatenate(decodes, dimension: 0), border: 0), cases)
        print(String(format: "landscape-demo preview MAE (0-255 levels): fitted %.2f, identity %.2f, SD 1.5 factors %.2f, "
                     + "best linear map on these renders %.2f; fit %.3f s", fitted, identity, sd15, oracle, fitTime))
        if case let .linear(matrix, bias) = preview.method { print("fitted matrix \(matrix) bias \(bias)") }
        XCTAssertLessThanOrEqual(fitted, 25)
        XCTAssertLessThan(fitted, identity / 2, "the fit matters")
        XCTAssertLessThan(fitted, sd15 / 2, "SD's published factors do not suit this model's latents")

        // cached per VAE: the second call does not fit again
        start = Date()
        let first = LatentPreview.fitted(pipeline.model.vae)
        let firstTime = Date().timeIntervalSince(start)
        start = Date()
        let again = LatentPreview.fitted(pipeline.model.vae)
        print(String(format: "fitted(): first %.3f s, cached %.4f s", firstTime, Date().timeIntervalSince(start)))
        XCTAssertEqual(first.image(cases[0].latents), again.image(cases[0].latents))
        XCTAssertEqual(first.image(cases[0].latents), preview.image(cases[0].latents), "the same seeded fit")
    }

    /// A fit is kept on disk for later runs, keyed by the VAE; a damaged store is ignored.
    func testFitsAreKeptInTheStore() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("preview-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = folder.appendingPathComponent("latent-previews.json")
        XCTAssertNil(LatentPreview.stored(for: pipeline.model.vae, in: store))
        let fitted = LatentPreview.fitted(pipeline.model.vae, store: store)
        let kept = try XCTUnwrap(LatentPreview.stored(for: pipeline.model.vae, in: store))
        guard case let .linear(m1, b1) = fitted.method, case let .linear(m2, b2) = kept.method else { return XCTFail("linear fits") }
        XCTAssertEqual(m1, m2)
        XCTAssertEqual(b1, b2)
        XCTAssertNil(LatentPreview.stored(for: try DefaultModelTests.pipeline().model.vae, in: store), "another VAE has no fit there")

        let text = try String(contentsOf: store, encoding: .utf8)
        for damaged in [text.replacingOccurrences(of: "\"bias\":[", with: "\"bias\":[1e30,"), "{\"x\": 5}", "not json", ""] {
            try damaged.write(to: store, atomically: true, encoding: .utf8)
            XCTAssertNil(LatentPreview.stored(for: pipeline.model.vae, in: store), damaged)
        }
    }

    func testFittedPreviewOnTheTinyModel() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let preview = LatentPreview(for: pipeline)
        guard case .linear = preview.method else { return XCTFail("a KL VAE gets the linear preview") }
        let cases = try renders(pipeline, ["a lake", "mountains"], steps: 3)
        let fitted = errors(preview, cases), identity = errors(Self.identity, cases)
        print(String(format: "tiny-pano preview MAE: fitted %.2f, identity %.2f", fitted, identity))
        XCTAssertLessThan(fitted, identity)
        XCTAssertEqual(preview.image(cases[0].latents).width, 96)
        XCTAssertEqual(preview.image(cases[0].latents, upscale: .nearest()).width, 768)
    }

    func testPanoramaCanvasPreviewIsMilliseconds() throws {
        let preview = Self.sd15
        let latents = Tensor(shape: [1, 4, 64, 512], data: (0..<(4 * 64 * 512)).map { Float(($0 * 7919) % 1000) / 500 - 1 })
        var times: [String: Double] = [:]
        for (name, upscale) in [("latent size", LatentPreview.Upscale.none), ("x8 nearest", .nearest()), ("x8 bilinear", .bilinear())] {
            _ = preview.image(latents, upscale: upscale)
            let start = Date()
            let image = preview.image(latents, upscale: upscale)
            times[name] = Date().timeIntervalSince(start) * 1000
            XCTAssertEqual(image.width, upscale == .none ? 512 : 4096)
            XCTAssertEqual(image.height, upscale == .none ? 64 : 512)
        }
        let big = preview.image(latents, upscale: .bilinear())
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("preview-\(UUID().uuidString).png")
        defer { try? FileManager.default.removeItem(at: file) }
        let start = Date()
        try PNG.write(RGBImage(width: big.width, height: big.height, pixels: big.pixels), to: file)
        times["PNG write of the x8 bilinear"] = Date().timeIntervalSince(start) * 1000
        print("4096x512 canvas preview (ms): " + times.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f", $0.key, $0.value) }.joined(separator: ", "))
    }

    func testUpscalingKeepsBlocksAndWraps() {
        let small = PreviewImage(width: 2, height: 1, pixels: [0, 0, 0, 200, 100, 50])
        let nearest = small.nearest(4)
        XCTAssertEqual(nearest.width, 8)
        XCTAssertEqual(Array(nearest.pixels[9..<15]), [0, 0, 0, 200, 100, 50])
        XCTAssertEqual(Array(nearest.pixels[(8 * 3 * 3)..<(8 * 3 * 3 + 3)]), [0, 0, 0], "every row repeated")
        let flat = small.bilinear(4)
        XCTAssertEqual(Array(flat.pixels[0..<3]), [0, 0, 0], "clamped at the left edge")
        XCTAssertEqual(Array(flat.pixels[21..<24]), [200, 100, 50], "clamped at the right edge")
        let wrapped = small.bilinear(4, circular: true)
        XCTAssertEqual(Array(wrapped.pixels[0..<3]), [75, 38, 19], "the left edge blends with the right one")
        XCTAssertEqual(small.nearest(8).areaAverage(8), small)
    }

    func testTAESDDecodeIsThePreviewWhenGiven() throws {
        let fixtures = PanoramaParityTests.fixtures
        let tiny = try AutoencoderTiny(contentsOf: fixtures.appendingPathComponent("models/tiny-taesd/separate/taesd_decoder.safetensors"))
        var pipeline = try PanoramaParityTests.sharedPipeline()
        pipeline.autoencoder = tiny
        let preview = LatentPreview(for: pipeline)
        guard case .tiny = preview.method else { return XCTFail("TAESD is the preview when the pipeline decodes with it") }
        let latents = Tensor(shape: [1, 4, 8, 16], data: (0..<512).map { Float($0 % 17) / 8 - 1 })
        let full = preview.image(latents, upscale: .bilinear())
        XCTAssertEqual(full, PreviewImage(decoded: tiny.decode(latents)))
        XCTAssertEqual(preview.image(latents), full.areaAverage(8))
    }
}
