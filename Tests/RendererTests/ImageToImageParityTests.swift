import Foundation
import Imaging
import Models
import Renderer
import Tensors
import Weights
import XCTest

/// The upscaler's core against diffusers' StableDiffusionImg2ImgPipeline with DDIM on tiny-pano at
/// one window (512x512, scale 1): tools/reference/make_img2img_fixtures.py. Same criteria as the
/// panorama parity tests.
final class ImageToImageParityTests: XCTestCase {
    private static let fixtures = PanoramaParityTests.fixtures.appendingPathComponent("golden/tiny-pano")

    private func settings(steps: Int) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: 512, height: 512)
        s.steps = steps
        s.guidanceScale = 7.5
        s.seed = 4321
        return s
    }

    private func check(_ run: String, steps: Int, strength: Double, expectedSteps: Int) throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let golden = try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("\(run).safetensors"))
        let image = try PNG.read(Self.fixtures.appendingPathComponent("img2img_input.png")).tensor()
        let s = settings(steps: steps)

        // Tiled encode (tiles smaller than the image) against diffusers' whole-image encode.
        let encoded = try pipeline.model.vae.encode(image, tiling: VAETiling(tileSide: 96)).mean
            * pipeline.model.vae.scalingFactor
        let expectedEncoded = try golden.tensor("encoded")
        XCTAssertLessThanOrEqual(encoded.maxAbsDifference(expectedEncoded), 1e-4 * expectedEncoded.maxAbs, "\(run): encoded")

        var loop = try pipeline.imageToImageLoop(s, image: image, strength: strength)
        XCTAssertEqual(loop.stepCount, expectedSteps)
        let noised = try golden.tensor("noised")
        XCTAssertLessThanOrEqual(loop.latents.maxAbsDifference(noised), 1e-4 * noised.maxAbs, "\(run): noised start")
        var timesteps: [Int] = []
        while let report = loop.next() { timesteps.append(report.timestep) }
        XCTAssertEqual(timesteps, try golden.integers("timesteps"), "\(run): timesteps")
        let final = try golden.tensor("final_latent")
        let diff = loop.latents.maxAbsDifference(final)
        XCTAssertLessThanOrEqual(diff, 1e-3 * final.maxAbs, "\(run): final latents, max diff \(diff)")

        if golden.contains("image_u8") {
            let decoded = RGBImage(decoded: try pipeline.decode(loop.latents, circular: false))
            let mad = PanoramaParityTests.meanAbsoluteDifference(decoded.pixels, try golden.integers("image_u8"))
            XCTAssertLessThanOrEqual(mad, 1.0 / 255, "\(run): image mean absolute difference \(mad * 255)/255")
        }
    }

    func testStrengthHalfMatchesDiffusers() throws {
        try check("img2img_s050", steps: 8, strength: 0.5, expectedSteps: 4)
    }

    func testStrength035MatchesDiffusers() throws {
        try check("img2img_s035", steps: 10, strength: 0.35, expectedSteps: 3)
    }

    /// diffusers' int(steps * strength), computed in double precision.
    func testStepsRunAtAStrength() {
        XCTAssertEqual(PanoramaPipeline.firstImageToImageStep(steps: 10, strength: 0.7), 3)
        XCTAssertEqual(PanoramaPipeline.firstImageToImageStep(steps: 30, strength: 0.35), 20)
        XCTAssertEqual(PanoramaPipeline.firstImageToImageStep(steps: 50, strength: 1), 0)
        XCTAssertEqual(PanoramaPipeline.firstImageToImageStep(steps: 50, strength: 0), 50)
    }

    func testStrengthOutsideTheUnitIntervalIsRejected() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let latents = Tensor(zeros: [1, 4, 64, 64])
        for bad in [-0.1, 1.5, Double.nan] {
            XCTAssertThrowsError(try pipeline.imageToImageLoop(settings(steps: 10), latents: latents, strength: bad)) {
                XCTAssertTrue("\($0)".contains("strength"), "\($0)")
            }
        }
    }
}
