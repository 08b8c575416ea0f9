import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tensors
import Weights
import XCTest

/// Inpainting against diffusers' StableDiffusionInpaintPipeline with DDIM at one window
/// (tools/reference/make_inpaint_fixtures.py): tiny-pano (4-channel UNet, 512x512) and tiny-inpaint
/// (9-channel UNet, 256x256), 8 steps, guidance 7.5, seed 4321, strengths 1 and 0.6, a soft-edged
/// mask. Latents within max|a − b| ≤ 1e-3 · max|b|, decoded images within 1/255 mean absolute
/// difference, as the other parity tests.
final class InpaintingParityTests: XCTestCase {
    static let fixtures = PanoramaParityTests.fixtures.appendingPathComponent("golden/inpaint")
    nonisolated(unsafe) static var inpaintModel: PanoramaPipeline?

    /// tiny-inpaint, loaded once.
    static func inpaintPipeline() throws -> PanoramaPipeline {
        if let p = inpaintModel { return p }
        let p = PanoramaPipeline(model: try StableDiffusionModel(
            folder: PanoramaParityTests.fixtures.appendingPathComponent("models/tiny-inpaint")))
        inpaintModel = p
        return p
    }

    private func settings(size: Int) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: size, height: size)
        s.steps = 8
        s.guidanceScale = 7.5
        s.seed = 4321
        return s
    }

    private func golden(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("\(name).safetensors"))
    }

    private func inputs(size: Int) throws -> (image: Tensor, mask: Tensor) {
        (try PNG.read(Self.fixtures.appendingPathComponent("input_\(size).png")).tensor(),
         try PNG.read(Self.fixtures.appendingPathComponent("mask_\(size).png")).maskTensor())
    }

    private func check(_ run: String, unet9: Bool, strength: Double, file: StaticString = #filePath, line: UInt = #line) throws {
        let pipeline = unet9 ? try Self.inpaintPipeline() : try PanoramaParityTests.sharedPipeline()
        XCTAssertEqual(pipeline.model.isInpainting, unet9)
        let size = unet9 ? 256 : 512
        let s = settings(size: size)
        let (image, mask) = try inputs(size: size)
        let g = try golden(run)
        let common = try golden(unet9 ? "unet9_s100" : "unet4_s100")

        let input = try pipeline.inpaintingInput(s, image: image, mask: mask)
        XCTAssertEqual(input.latentMask, try common.tensor("latent_mask"), "\(run): latent mask", file: file, line: line)
        let imageLatents = try common.tensor("image_latents")
        XCTAssertLessThanOrEqual(input.imageLatents.maxAbsDifference(imageLatents), 1e-4 * imageLatents.maxAbs,
                                 "\(run): image latents", file: file, line: line)
        if unet9 {
            let masked = try common.tensor("masked_image_latents")
            // the masked image's hard-edged grey hole: tiled and whole encodes differ a little more
            XCTAssertLessThanOrEqual(input.maskedImageLatents!.maxAbsDifference(masked), 3e-4 * masked.maxAbs,
                                     "\(run): masked-image latents", file: file, line: line)
        } else {
            XCTAssertNil(input.maskedImageLatents)
        }

        var loop = try pipeline.inpaintingLoop(s, image: image, mask: mask, strength: strength)
        if g.contains("initial") {
            let initial = try g.tensor("initial")
            XCTAssertLessThanOrEqual(loop.latents.maxAbsDifference(initial), 1e-4 * initial.maxAbs,
                                     "\(run): initial latents", file: file, line: line)
        }
        var timesteps: [Int] = []
        while let report = loop.next() { timesteps.append(report.timestep) }
        XCTAssertEqual(timesteps, try g.integers("timesteps"), "\(run): timesteps", file: file, line: line)
        let final = try g.tensor("final_latent")
        let diff = loop.latents.maxAbsDifference(final)
        XCTAssertLessThanOrEqual(diff, 1e-3 * final.maxAbs, "\(run): final latents, max diff \(diff)", file: file, line: line)

        let decoded = RGBImage(decoded: try pipeline.decode(loop.latents, circular: false))
        let (lo, hi) = unet9 ? (64, 192) : (192, 320)
        var crop: [UInt8] = []
        for y in lo..<hi { crop += decoded.pixels[(y * size + lo) * 3..<(y * size + hi) * 3] }
        let mad = PanoramaParityTests.meanAbsoluteDifference(crop, try g.integers("image_u8"))
        XCTAssertLessThanOrEqual(mad, 1.0 / 255, "\(run): image mean absolute difference \(mad * 255)/255", file: file, line: line)
    }

    func testFourChannelStrength1MatchesDiffusers() throws { try check("unet4_s100", unet9: false, strength: 1) }

    func testFourChannelStrength06MatchesDiffusers() throws { try check("unet4_s060", unet9: false, strength: 0.6) }

    func testNineChannelStrength1MatchesDiffusers() throws { try check("unet9_s100", unet9: true, strength: 1) }

    func testNineChannelStrength06MatchesDiffusers() throws { try check("unet9_s060", unet9: true, strength: 0.6) }

    /// A mask [1, 1, H, W]: 1 inside the ellipse, a soft edge, 0 outside.
    private func ellipseMask(height: Int, width: Int) -> Tensor {
        var data = [Float](repeating: 0, count: height * width)
        for y in 0..<height {
            for x in 0..<width {
                let dx = (Double(x) - 0.45 * Double(width)) / (0.25 * Double(width))
                let dy = (Double(y) - 0.5 * Double(height)) / (0.3 * Double(height))
                data[y * width + x] = Float(min(1, max(0, (1 - (dx * dx + dy * dy).squareRoot()) * 4 + 0.5)))
            }
        }
        return Tensor(shape: [1, 1, height, width], data: data)
    }

    /// Over several MultiDiffusion windows (and SpotDiffusion, 360°) a 4-channel model ends with
    /// exactly the image's latents wherever the mask keeps the image.
    func testFourChannelKnownRegionIsTheImageAfterTheLastStep() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        for spot in [false, true] {
            var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: 768, height: 512)
            s.steps = 3
            s.stride = 16
            s.seed = 5
            s.spotDiffusion = spot
            s.circular = spot
            let image = Tensor(shape: [1, 3, 512, 768], data: (0..<(3 * 512 * 768)).map { Float(($0 * 7919) % 255) / 127.5 - 1 })
            let input = try pipeline.inpaintingInput(s, image: image, mask: ellipseMask(height: 512, width: 768))
            var loop = try pipeline.inpaintingLoop(s, input: input, strength: 1)
            var steps = 0
            while let report = loop.next() {
                steps += 1
                XCTAssertGreaterThan(report.views, 1)
            }
            XCTAssertEqual(steps, 3)
            let m = input.latentMask.data, plane = m.count
            XCTAssertTrue(m.contains(0) && m.contains(1))
            var kept = 0, painted = 0
            for c in 0..<4 {
                for i in 0..<plane {
                    let (a, b) = (loop.latents.data[c * plane + i], input.imageLatents.data[c * plane + i])
                    if m[i] == 0 { XCTAssertEqual(a, b); kept += 1 } else if a != b { painted += 1 }
                }
            }
            XCTAssertGreaterThan(kept, 0)
            XCTAssertGreaterThan(painted, 0, "the masked region is repainted")
        }
    }

    /// A 9-channel model renders from text alone through the ordinary loop (mask all ones, the
    /// grey image's latents), over several windows.
    func testNineChannelTextToImageRuns() throws {
        let pipeline = try Self.inpaintPipeline()
        var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: 384, height: 256)
        s.steps = 2
        s.stride = 8
        XCTAssertEqual(pipeline.latentShape(s), [1, 4, 32, 48])
        var loop = try pipeline.denoisingLoop(s)
        XCTAssertEqual(loop.conditioning?.shape, [1, 5, 32, 48])
        XCTAssertEqual(Array(loop.conditioning!.data[0..<(32 * 48)]), Array(repeating: 1, count: 32 * 48))
        var views = 0
        while let report = loop.next() { views = report.views }
        XCTAssertGreaterThan(views, 1)
        XCTAssertTrue(loop.latents.data.allSatisfy(\.isFinite))
        XCTAssertEqual(loop.latents.shape, [1, 4, 32, 48])
        // The inpainting pipeline with everything masked gives the same conditioning.
        let all = try pipeline.inpaintingInput(s, image: Tensor(zeros: [1, 3, 256, 384]),
                                               mask: Tensor(repeating: 1, shape: [1, 1, 256, 384]))
        XCTAssertEqual(Tensor.concatenate([all.latentMask, all.maskedImageLatents!], dimension: 1), loop.conditioning)
    }

    /// img2img (the upscaler's loop) with an inpainting model: nothing known, as in text to image.
    func testNineChannelImageToImageRuns() throws {
        let pipeline = try Self.inpaintPipeline()
        var s = settings(size: 256)
        s.steps = 4
        let (image, _) = try inputs(size: 256)
        var loop = try pipeline.imageToImageLoop(s, image: image, strength: 0.5)
        XCTAssertEqual(loop.conditioning, try pipeline.nothingKnownConditioning(s))
        while loop.next() != nil {}
        XCTAssertTrue(loop.latents.data.allSatisfy(\.isFinite))
    }

    func testRegionPromptsRefuseAnInpaintingModel() throws {
        let pipeline = try Self.inpaintPipeline()
        let s = PanoramaSettings(prompt: "snowy mountains at sunset", width: 256, height: 256)
        XCTAssertThrowsError(try pipeline.regionLoop(s, composition: Composition(regions: [], bootstrapSteps: 0))) {
            XCTAssertTrue("\($0)".contains("inpainting"), "\($0)")
        }
    }

    func testStrengthLeavingNoStepIsRejected() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let s = settings(size: 512)
        let (image, mask) = try inputs(size: 512)
        XCTAssertThrowsError(try pipeline.inpaintingLoop(s, image: image, mask: mask, strength: 0.1)) {
            XCTAssertTrue("\($0)".contains("no step"), "\($0)")
        }
        XCTAssertThrowsError(try pipeline.inpaintingLoop(s, image: image, mask: Tensor(zeros: [1, 1, 256, 256]), strength: 1))
    }

    /// A1111's mask blur (cv2.GaussianBlur, rows then columns) against the numpy reference.
    func testMaskBlurMatchesA1111() throws {
        let mask = try PNG.read(Self.fixtures.appendingPathComponent("mask_256.png")).maskTensor()
        let g = try golden("blur")
        for (key, radius) in [("blur_r4", 4.0), ("blur_r1_5", 1.5)] {
            let blurred = Mask.blurred(mask, radius: radius)
            let reference = try g.integers(key)
            var worst: Float = 0
            for y in 64..<192 {
                for x in 64..<192 {
                    worst = max(worst, abs(blurred.data[y * 256 + x] * 255 - Float(reference[(y - 64) * 128 + x - 64])))
                }
            }
            XCTAssertLessThanOrEqual(worst, 1, "\(key): max difference \(worst)/255")
        }
        XCTAssertEqual(Mask.blurred(mask, radius: 0), mask)
    }

    func testCompositeKeepsTheOriginalWhereTheMaskIsZero() {
        let original = Tensor(repeating: -1, shape: [1, 3, 1, 3]), generated = Tensor(repeating: 1, shape: [1, 3, 1, 3])
        let mask = Tensor(shape: [1, 1, 1, 3], data: [0, 0.25, 1])
        XCTAssertEqual(Mask.composite(generated: generated, original: original, mask: mask).data,
                       [-1, -0.5, 1, -1, -0.5, 1, -1, -0.5, 1])
        let a = RGBImage(width: 3, height: 1, pixels: [0, 0, 0, 0, 0, 0, 0, 0, 0])
        let b = RGBImage(width: 3, height: 1, pixels: [200, 200, 200, 200, 200, 200, 200, 200, 200])
        XCTAssertEqual(Mask.composite(generated: b, original: a, mask: mask).pixels, [0, 0, 0, 50, 50, 50, 200, 200, 200])
    }
}
