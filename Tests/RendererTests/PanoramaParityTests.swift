import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tensors
import Weights
import XCTest

/// End-to-end parity with diffusers' StableDiffusionPanoramaPipeline on the tiny-pano model
/// (tools/reference/make_panorama_fixtures.py): 512x1024, 8 DDIM steps, guidance 7.5, seed 1234.
/// Latents within max|a − b| ≤ 1e-3 · max|b|; images within 1/255 mean absolute difference.
final class PanoramaParityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    nonisolated(unsafe) static var loaded: PanoramaPipeline?

    func pipeline() throws -> PanoramaPipeline { try Self.sharedPipeline() }

    /// tiny-pano, loaded once for all tests.
    static func sharedPipeline() throws -> PanoramaPipeline {
        if let p = Self.loaded { return p }
        let p = PanoramaPipeline(model: try StableDiffusionModel(folder: Self.fixtures.appendingPathComponent("models/tiny-pano")))
        Self.loaded = p
        return p
    }

    func golden(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("golden/tiny-pano/\(name).safetensors"))
    }

    func settings(_ configure: (inout PanoramaSettings) -> Void = { _ in }) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: 1024, height: 512)
        s.steps = 8
        s.seed = 1234
        configure(&s)
        return s
    }

    /// Runs the loop, checking the first step and final latents, then the decoded image.
    func assertMatches(_ name: String, _ s: PanoramaSettings, latentsIn: Tensor? = nil,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let p = try pipeline(), g = try golden(name)
        var loop = try p.denoisingLoop(s, latents: latentsIn)
        XCTAssertLessThanOrEqual(loop.latents.maxAbsDifference(try g.tensor("initial_latent")), 1e-5,
                                 "\(name): initial latents", file: file, line: line)
        var first: Tensor?
        while let report = loop.next() { if report.index == 0 { first = report.latents } }
        if g.contains("latents_step0"), let first {
            let expected = try g.tensor("latents_step0")
            XCTAssertLessThanOrEqual(first.maxAbsDifference(expected), 1e-3 * expected.maxAbs,
                                     "\(name): after step 1", file: file, line: line)
        }
        let expected = try g.tensor("final_latent")
        let diff = loop.latents.maxAbsDifference(expected)
        XCTAssertLessThanOrEqual(diff, 1e-3 * expected.maxAbs, "\(name): final latents, max diff \(diff)", file: file, line: line)

        // diffusers' decode (for 360°: padded with 8 latent columns from the other side).
        let reference = try g.integers("image_u8")
        let whole = RGBImage(decoded: try p.decode(loop.latents, circular: s.circular, method: .whole))
        let mad = Self.meanAbsoluteDifference(whole.pixels, reference)
        XCTAssertLessThanOrEqual(mad, 1.0 / 255, "\(name): image mean absolute difference \(mad * 255)/255", file: file, line: line)
        // The default tiled decode: the same image; in 360° mode a decoder that wraps instead
        // of diffusers' padding, which changes pixels near the edges only slightly.
        let tiled = RGBImage(decoded: try p.decode(loop.latents, circular: s.circular))
        let tiledMAD = Self.meanAbsoluteDifference(tiled.pixels, reference)
        XCTAssertLessThanOrEqual(tiledMAD, (s.circular ? 3.0 : 1.0) / 255,
                                 "\(name): tiled decode mean absolute difference \(tiledMAD * 255)/255", file: file, line: line)
    }

    static func meanAbsoluteDifference(_ a: [UInt8], _ b: [Int]) -> Double {
        precondition(a.count == b.count, "image sizes differ: \(a.count) vs \(b.count) values")
        return zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(b.count) / 255
    }

    func testPlainFromSeed() throws { try assertMatches("pano_plain", settings()) }

    func testCircularFromSeed() throws { try assertMatches("pano_circular", settings { $0.circular = true }) }

    func testFromGivenLatents() throws {
        let latents = try golden("pano_latents_in").tensor("latents_in")
        try assertMatches("pano_latents_in", settings(), latentsIn: latents)
    }

    /// diffusers' panorama pipeline steps each window with its own noise (`.perWindow`).
    func testStochasticDDIMDrawsNoiseLikeDiffusers() throws {
        try assertMatches("pano_eta", settings { $0.eta = 0.5; $0.noiseFusion = .perWindow })
    }

    func testGuidanceOneSkipsTheUnconditionalPass() throws {
        try assertMatches("pano_guidance1", settings { $0.guidanceScale = 1 })
    }

    func testBatchedViewsGiveTheSameResult() throws {
        // Also checked against diffusers' own batched run.
        try assertMatches("pano_batch4", settings { $0.viewBatchSize = 4 })
        let p = try pipeline()
        var one = try p.denoisingLoop(settings { $0.steps = 2 })
        var four = try p.denoisingLoop(settings { $0.steps = 2; $0.viewBatchSize = 4 })
        while one.next() != nil {}
        while four.next() != nil {}
        XCTAssertLessThanOrEqual(one.latents.maxAbsDifference(four.latents), 1e-5 * one.latents.maxAbs)
    }

    /// DPM-Solver++ 2M Karras keeps a history per window (diffusers snapshots the scheduler per view
    /// batch); Euler a scales the input and draws noise per view batch. Both view batch sizes must
    /// match diffusers' runs.
    func testOtherSamplersMatchDiffusers() throws {
        let p = try pipeline()
        for (name, sampler) in [("pano_dpm_karras", Sampler.dpmSolver2MKarras), ("pano_euler_a", .eulerAncestral)] {
            let g = try golden(name)
            for batch in [1, 4] {
                var loop = try p.denoisingLoop(settings {
                    $0.sampler = sampler
                    $0.viewBatchSize = batch
                    $0.noiseFusion = .perWindow  // diffusers' rule
                })
                var first: Tensor?
                while let report = loop.next() { if report.index == 0 { first = report.latents } }
                for (what, actual) in [("latents_step0", first!), ("final_latent", loop.latents)] {
                    let expected = try g.tensor("batch\(batch).\(what)")
                    XCTAssertLessThanOrEqual(actual.maxAbsDifference(expected), 1e-3 * expected.maxAbs,
                                             "\(name), view batch \(batch): \(what)")
                }
            }
            XCTAssertEqual(try p.makeScheduler(settings { $0.sampler = sampler }).timesteps, try g.integers("timesteps"), name)
        }
    }

    func testViewsMatchDiffusersWhereItCoversTheCanvas() throws {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("golden/tiny-pano/views.json"))
        let all = try JSONDecoder().decode([String: [[Int]]].self, from: data)
        XCTAssertGreaterThan(all.count, 8)
        for (key, reference) in all {
            let parts = key.split(separator: "_")
            let size = parts[0].split(separator: "x").map { Int($0)! / 8 }
            let circular = parts.count > 1
            let ours = ViewTiler(window: 64, stride: 8, circular: circular).views(height: size[0], width: size[1])
                .map { [$0.row, $0.row + $0.height, $0.column, $0.column + $0.width] }
            let covers = (size[0] - 64) % 8 == 0 && (circular || (size[1] - 64) % 8 == 0)
            if circular && size[1] == 64 {
                // diffusers' single unwrapped window at width = window; ours wrap (README).
                XCTAssertTrue(Set(reference).isSubset(of: Set(ours)), key)
            } else if covers {
                XCTAssertEqual(ours, reference, key)
            } else {
                // diffusers leaves the edge uncovered; ours adds flush windows.
                XCTAssertTrue(Set(reference).isSubset(of: Set(ours)), key)
                XCTAssertGreaterThan(ours.count, reference.count, key)
            }
        }
    }

    /// At 768 pixels (where diffusers' wrap-around fails), a 360° canvas has no edge: rolling the
    /// starting latents by a whole number of strides rolls the result by the same amount.
    /// (Seam statistics of the picture itself need a trained model; random weights give
    /// white-noise images whose every column pair differs alike.)
    func testWrapAt768PixelsHasNoEdge() throws {
        let p = try pipeline()
        let s = settings { $0.height = 768; $0.circular = true; $0.steps = 2; $0.stride = 16; $0.seed = 7 }
        let (start, _) = p.seededLatents(s)
        let shift = 48
        func run(_ latents: Tensor) throws -> Tensor {
            var loop = try p.denoisingLoop(s, latents: latents)
            while loop.next() != nil {}
            return loop.latents
        }
        let direct = try run(start)
        let rolledBack = Self.roll(try run(Self.roll(start, by: shift)), by: -shift)
        XCTAssertLessThanOrEqual(direct.maxAbsDifference(rolledBack), 1e-4 * direct.maxAbs)
        let image = RGBImage(decoded: try p.decode(direct, circular: true))
        XCTAssertEqual([image.width, image.height], [1024, 768])
    }

    /// The canvas rolled right by `k` columns (wrapping).
    static func roll(_ x: Tensor, by k: Int) -> Tensor {
        let w = x.shape[3]
        var out = x
        for row in 0..<(x.count / w) {
            for col in 0..<w { out.data[row * w + ((col + k) % w + w) % w] = x.data[row * w + col] }
        }
        return out
    }
}
