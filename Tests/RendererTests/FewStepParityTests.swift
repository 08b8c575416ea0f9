import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tensors
import Weights
import XCTest

/// Few-step samplers end to end against diffusers at one window, from the seed alone
/// (tools/reference/make_fewstep_fixtures.py): 512x512, "snowy mountains at sunset", seed 1234.
/// LCM with a kohya LoRA at guidance 1, LCM on the bundled v-prediction zero-SNR model, a
/// guidance-embedded (`time_cond_proj_dim`) UNet at guidance 8.5 as diffusers'
/// LatentConsistencyModelPipeline runs it, TCD with eta 0 (with CFG) and 0.3, and Euler a on
/// trailing timesteps at 1 and 4 steps. Final latents within 1e-3 · max|b|; images within 1/255
/// mean absolute difference.
final class FewStepParityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let repository = fixtures.deletingLastPathComponent().deletingLastPathComponent()

    struct Case: Decodable {
        var model: String
        var sampler: String
        var steps: Int
        var guidance: Float
        var eta: Float?
        var lora: String?
        var timestep_spacing: String?
        var timesteps: [Int]
    }

    struct Cases: Decodable {
        var prompt: String
        var seed: UInt64
        var width: Int
        var height: Int
        var cases: [String: Case]
    }

    static func modelFolder(_ name: String) -> URL {
        name == "landscape-demo" ? repository.appendingPathComponent("models/landscape-demo")
            : fixtures.appendingPathComponent("models/\(name)")
    }

    /// Renders case `name` with `noiseFusion` and compares it with diffusers.
    func assertMatches(_ name: String, noiseFusion: NoiseFusion = .canvas,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("golden/fewstep/cases.json"))
        let all = try JSONDecoder().decode(Cases.self, from: data)
        let c = try XCTUnwrap(all.cases[name], "no case \(name)")
        let loras = try (c.lora.map { [LoRAApplication(lora: try LoRA(url: Self.fixtures.appendingPathComponent("lora/\($0)")))] } ?? [])
        let pipeline = PanoramaPipeline(model: try StableDiffusionModel(folder: Self.modelFolder(c.model), loras: loras))
        var s = PanoramaSettings(prompt: all.prompt, width: all.width, height: all.height)
        s.seed = all.seed
        s.steps = c.steps
        s.guidanceScale = c.guidance
        s.sampler = try XCTUnwrap(Sampler(rawValue: c.sampler))
        s.eta = c.eta ?? 0
        s.timestepSpacing = c.timestep_spacing
        s.noiseFusion = noiseFusion
        try pipeline.validate(s, availableMemory: nil)
        let golden = try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("golden/fewstep/\(name).safetensors"))

        XCTAssertEqual(try pipeline.makeScheduler(s).timesteps, c.timesteps, "\(name): timesteps", file: file, line: line)
        var loop = try pipeline.denoisingLoop(s)
        let initial = try golden.tensor("initial_latent")  // scaled by the sampler's initial σ (14.6 for trailing Euler)
        XCTAssertLessThanOrEqual(loop.latents.maxAbsDifference(initial), 1e-6 * initial.maxAbs,
                                 "\(name): initial latents", file: file, line: line)
        var calls = 0
        while loop.next() != nil { calls += 1 }
        XCTAssertEqual(calls, c.steps, file: file, line: line)
        let expected = try golden.tensor("final_latent")
        let diff = loop.latents.maxAbsDifference(expected)
        XCTAssertLessThanOrEqual(diff, 1e-3 * expected.maxAbs, "\(name): final latents, max diff \(diff) of \(expected.maxAbs)",
                                 file: file, line: line)
        let image = RGBImage(decoded: try pipeline.decode(loop.latents, circular: false, method: .whole))
        let mad = PanoramaParityTests.meanAbsoluteDifference(image.pixels, try golden.integers("image_u8"))
        XCTAssertLessThanOrEqual(mad, 1.0 / 255, "\(name): image mean absolute difference \(mad * 255)/255",
                                 file: file, line: line)
    }

    func testLCMWithAKohyaLoRA() throws { try assertMatches("lcm_lora") }

    func testLCMOnAVPredictionZeroSNRModel() throws { try assertMatches("lcm_demo") }

    func testGuidanceEmbeddedUNet() throws { try assertMatches("lcm_time_cond") }

    func testTCDDeterministicWithGuidance() throws { try assertMatches("tcd_eta0") }

    func testTCDWithGamma() throws { try assertMatches("tcd_eta0.3") }

    func testTrailingEulerAncestralOneStep() throws { try assertMatches("euler_a_trailing1") }

    func testTrailingEulerAncestralFourSteps() throws { try assertMatches("euler_a_trailing4") }

    /// At one window the two noise rules draw the same numbers in the same order.
    func testNoiseRulesAgreeAtOneWindow() throws {
        try assertMatches("lcm_lora", noiseFusion: .perWindow)
        try assertMatches("tcd_eta0.3", noiseFusion: .perWindow)
    }

    /// A guidance-embedded UNet makes one call per window and step, whatever the scale.
    func testGuidanceEmbeddedUNetRunsNoUnconditionalPass() throws {
        let pipeline = PanoramaPipeline(model: try StableDiffusionModel(folder: Self.modelFolder("tiny-lcm")))
        XCTAssertTrue(pipeline.model.unet.embedsGuidance)
        var s = PanoramaSettings(prompt: "a lake", width: 512, height: 512)
        s.guidanceScale = 8.5
        s.negativePrompt = "fog"
        let guidance = try pipeline.guidance(s)
        XCTAssertTrue(guidance.embedded)
        XCTAssertFalse(guidance.isActive)
    }
}
