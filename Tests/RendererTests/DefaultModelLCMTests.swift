import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tensors
import Weights
import XCTest

/// The bundled model with its LCM-LoRA (models/lora/landscape-demo-lcm.safetensors, distilled by
/// tools/train-demo/distill_lcm.py): prompt adherence at 4 LCM steps, and panoramas that stay
/// sharp with the canvas-wide noise rule.
final class DefaultModelLCMTests: XCTestCase {
    static let lora = DefaultModelTests.folder.deletingLastPathComponent().appendingPathComponent("lora/landscape-demo-lcm.safetensors")
    nonisolated(unsafe) static var loaded: PanoramaPipeline?

    static func pipeline() throws -> PanoramaPipeline {
        if let loaded { return loaded }
        let model = try StableDiffusionModel(folder: DefaultModelTests.folder,
                                             loras: [LoRAApplication(lora: try LoRA(url: lora))])
        let p = PanoramaPipeline(model: model)
        loaded = p
        return p
    }

    /// The `landscape-demo-lcm` preset's settings: LCM, 4 steps, guidance 1, Gaussian window weights.
    static func settings(_ prompt: String, seed: UInt64, width: Int = 512) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: prompt, width: width, height: 512)
        s.sampler = .lcm
        s.steps = 4
        s.guidanceScale = 1
        s.seed = seed
        s.windowWeighting = .gaussian
        return s
    }

    static func render(_ p: PanoramaPipeline, _ s: PanoramaSettings) throws -> RGBImage {
        var loop = try p.denoisingLoop(s)
        while loop.next() != nil {}
        return RGBImage(decoded: try p.decode(loop.latents, circular: false))
    }

    /// For seeds 1–10, `statistic(first) > statistic(second)` on at least 9 LCM pictures.
    private func assertMovesTheRightWay(_ first: String, _ second: String, _ what: String,
                                        _ statistic: (RGBImage) -> Double) throws {
        let p = try Self.pipeline()
        try DefaultModelTests.assertMovesTheRightWay(first, second, "LCM 4 steps, " + what, statistic) {
            try Self.render(p, Self.settings($0, seed: $1))
        }
    }

    func testNoonSkyIsBrighterThanNightSky() throws {
        try assertMovesTheRightWay("a calm sea at noon", "a calm sea at night", "sky luminance", DefaultModelTests.skyLuminance)
    }

    func testSnowIsWhiterThanDesert() throws {
        try assertMovesTheRightWay("snowy mountains at noon", "desert dunes at noon", "near-white fraction",
                                   DefaultModelTests.whiteFraction)
    }

    func testSeaIsBluerBelowThanMountains() throws {
        try assertMovesTheRightWay("a calm sea at noon", "rocky mountains at noon", "lower-half blue share",
                                   { DefaultModelTests.lowerBlueShare($0) })
    }

    /// 2048x512, seeds 1–5: the Laplacian energy of the 4-step LCM panorama with the canvas-wide
    /// noise is at least 0.85x that of the model's own 20-step DDIM panorama (its preset: guidance
    /// 5, Gaussian window weights); the per-window rule's ratio is printed for comparison.
    func testFourStepPanoramasStaySharp() throws {
        let lcm = try Self.pipeline()
        let base = try DefaultModelTests.pipeline()
        var canvas: [Double] = [], perWindow: [Double] = []
        for seed in UInt64(1)...5 {
            let prompt = "snowy mountains at sunset"
            var ddim = PanoramaSettings(prompt: prompt, width: 2048, height: 512)
            ddim.steps = 20
            ddim.guidanceScale = 5
            ddim.seed = seed
            ddim.windowWeighting = .gaussian
            let reference = try Self.render(base, ddim).laplacianEnergy
            var s = Self.settings(prompt, seed: seed, width: 2048)
            canvas.append(try Self.render(lcm, s).laplacianEnergy / reference)
            s.noiseFusion = .perWindow
            perWindow.append(try Self.render(lcm, s).laplacianEnergy / reference)
        }
        let show = { (v: [Double]) in v.map { String(format: "%.2f", $0) }.joined(separator: " ") }
        print("2048x512 LCM 4 steps, Laplacian energy / DDIM 20 steps': canvas noise \(show(canvas)), per-window noise \(show(perWindow))")
        for (seed, ratio) in canvas.enumerated() {
            XCTAssertGreaterThanOrEqual(ratio, 0.85, "seed \(seed + 1): canvas-noise sharpness ratio \(ratio)")
        }
    }
}
