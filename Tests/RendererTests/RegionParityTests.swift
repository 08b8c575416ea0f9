import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tensors
import Weights
import XCTest

/// Region-based MultiDiffusion against the Python reference built from diffusers components
/// (tools/reference/make_compose_fixtures.py) on tiny-pano: 512x1024, stride 16, 8 DDIM steps,
/// a background and two regions with their own negative prompt, guidance and weight.
final class RegionParityTests: XCTestCase {
    private static let folder = PanoramaParityTests.fixtures.appendingPathComponent("golden/tiny-pano")

    private func settings() -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "a sunny sky", width: 1024, height: 512)
        s.steps = 8
        s.guidanceScale = 7.5
        s.seed = 2024
        s.stride = 16
        return s
    }

    static let regions = [
        Region(shape: .rectangle(x: 0, y: 0, width: 384, height: 512), prompt: RegionPrompt(prompt: "a calm sea")),
        Region(shape: .rectangle(x: 640, y: 128, width: 384, height: 256),
               prompt: RegionPrompt(prompt: "snowy mountains", negativePrompt: "fog", guidanceScale: 5, weight: 2)),
    ]

    private func run(_ name: String, bootstrapSteps: Int) throws -> (RegionDenoisingLoop<AnyScheduler>, SafeTensorsFile) {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let golden = try SafeTensorsFile(url: Self.folder.appendingPathComponent("\(name).safetensors"))
        var loop = try pipeline.regionLoop(settings(), composition: Composition(regions: Self.regions, bootstrapSteps: bootstrapSteps))
        XCTAssertLessThanOrEqual(loop.latents.maxAbsDifference(try golden.tensor("initial_latent")), 1e-5, "\(name): initial latents")
        XCTAssertEqual(loop.promptsPerView, [[0, 1], [0, 1], [0, 1, 2], [0, 2], [0, 2]])
        XCTAssertEqual(loop.denoisesPerStep, 11)
        while loop.next() != nil {}
        let expected = try golden.tensor("final_latent")
        let diff = loop.latents.maxAbsDifference(expected)
        XCTAssertLessThanOrEqual(diff, 1e-3 * expected.maxAbs, "\(name): final latents, max diff \(diff)")
        return (loop, golden)
    }

    func testPlainCompositionMatchesTheReference() throws {
        let (loop, golden) = try run("compose_plain", bootstrapSteps: 0)
        let masks = try golden.tensor("masks")
        XCTAssertEqual(loop.masks.flatMap { $0 }, masks.data, "background and region masks")
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let image = RGBImage(decoded: try pipeline.decode(loop.latents, circular: false))
        let mad = PanoramaParityTests.meanAbsoluteDifference(image.pixels, try golden.integers("image_u8"))
        XCTAssertLessThanOrEqual(mad, 1.0 / 255, "image mean absolute difference \(mad * 255)/255")
    }

    func testBootstrappedCompositionMatchesTheReference() throws {
        let (loop, golden) = try run("compose_bootstrap", bootstrapSteps: 3)
        let bootstrap = try XCTUnwrap(loop.bootstrap)
        XCTAssertLessThanOrEqual(bootstrap.noise.maxAbsDifference(try golden.tensor("boot_noise")), 1e-5, "bootstrap noise")
        let expected = try golden.tensor("background_latents")  // [steps, regions, channels]
        let ours = Tensor(shape: [3, 2, 4], data: bootstrap.backgrounds.flatMap { $0.flatMap { $0 } })
        XCTAssertLessThanOrEqual(ours.maxAbsDifference(expected), 1e-4 * max(expected.maxAbs, 1e-3), "background latents")
    }

    func testBadCompositionsAreRejected() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        func rejects(_ regions: [Region], _ part: String, bootstrap: Int = 0, line: UInt = #line) {
            XCTAssertThrowsError(try pipeline.validate(Composition(regions: regions, bootstrapSteps: bootstrap), for: settings()),
                                 line: line) { XCTAssertTrue("\($0)".contains(part), "“\($0)” lacks “\(part)”", line: line) }
        }
        let ok = RegionPrompt(prompt: "a lighthouse")
        rejects([], "at least one region")
        rejects([Region(shape: .rectangle(x: 900, y: 0, width: 200, height: 100), prompt: ok)], "reaches outside")
        rejects([Region(shape: .rectangle(x: 10, y: 10, width: 0, height: 100), prompt: ok)], "zero area")
        rejects([Region(shape: .rectangle(x: 13, y: 13, width: 3, height: 3), prompt: ok)], "covers no part")
        rejects([Region(shape: .rectangle(x: 0, y: 0, width: 64, height: 64), prompt: RegionPrompt(prompt: "  "))], "empty prompt")
        rejects([Region(shape: .mask(width: 10, height: 10, values: Array(repeating: 1, count: 100)), prompt: ok)],
                "the mask is 10x10 but the canvas is 1024x512")
        rejects(Self.regions, "bootstrap steps", bootstrap: 9)
    }

    /// A feathered rectangle ramps from 0 at its edge to 1 inside (distances from each latent
    /// block's centre pixel); a hard one is 0/1.
    func testFeatheredRectangleIsSoft() {
        let hard = RegionShape.rectangle(x: 64, y: 0, width: 128, height: 128).latentMask(rows: 16, columns: 32, scale: 8)
        XCTAssertEqual(Set(hard), [0, 1])
        XCTAssertEqual(hard.reduce(0, +), 16 * 16)
        let soft = RegionShape.rectangle(x: 64, y: 0, width: 128, height: 128, feather: 32)
            .latentMask(rows: 16, columns: 32, scale: 8)
        XCTAssertEqual(Array(soft[(8 * 32 + 7)..<(8 * 32 + 14)]), [0, 0.140625, 0.390625, 0.640625, 0.890625, 1, 1])
        // The top and bottom edges lie on the canvas border: not feathered.
        XCTAssertEqual(soft[16], 1)
        XCTAssertEqual(soft[15 * 32 + 16], 1)
    }
}
