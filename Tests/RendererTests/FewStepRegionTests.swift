import Foundation
import Renderer
import Schedulers
import Tensors
import XCTest

/// Region compositions with few steps: the noise rule of stochastic samplers (`NoiseFusion`) and
/// StreamMultiDiffusion's quantized masks and centred bootstrapping (`FewStepRegions`), on tiny-pano.
final class FewStepRegionTests: XCTestCase {
    private func settings(steps: Int, sampler: Sampler = .ddim, eta: Float = 0, width: Int = 1024,
                          stride: Int = 16) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "a sunny sky", width: width, height: 512)
        s.steps = steps
        s.seed = 2024
        s.stride = stride
        s.sampler = sampler
        s.eta = eta
        return s
    }

    private func run(_ s: PanoramaSettings, _ composition: Composition, latents: Tensor? = nil,
                     steps: Int? = nil) throws -> RegionDenoisingLoop<AnyScheduler> {
        var loop = try PanoramaParityTests.sharedPipeline().regionLoop(s, composition: composition, latents: latents)
        var n = 0
        while n < (steps ?? Int.max), loop.next() != nil { n += 1 }
        return loop
    }

    private static func hash(_ t: Tensor) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for v in t.data { h = (h ^ UInt64(v.bitPattern)) &* 0x100_0000_01b3 }
        return h
    }

    private static func std(_ values: [Float]) -> Double {
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        return (values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)).squareRoot()
    }

    // MARK: The noise rule

    /// One window and one prompt (a region over the whole 512x512 canvas, so no background): both
    /// rules draw the same numbers in the same order and give the same latents, bit for bit.
    func testOneWindowCanvasNoiseEqualsPerWindow() throws {
        let whole = [Region(shape: .rectangle(x: 0, y: 0, width: 512, height: 512), prompt: RegionPrompt(prompt: "a calm sea"))]
        for (sampler, eta) in [(Sampler.ddim, Float(1)), (.eulerAncestral, 0)] {
            var s = settings(steps: 4, sampler: sampler, eta: eta, width: 512)
            let composition = Composition(regions: whole, bootstrapSteps: 1)
            s.noiseFusion = .canvas
            let canvas = try run(s, composition)
            s.noiseFusion = .perWindow
            let perWindow = try run(s, composition)
            XCTAssertEqual(canvas.views.count, 1)
            XCTAssertEqual(canvas.promptsPerView, [[1]])
            XCTAssertEqual(canvas.latents.data, perWindow.latents.data, "\(sampler.displayName)")
        }
    }

    /// Several windows and prompts: the fused noise of one step, measured as the difference of two
    /// runs from the same latents with different seeds (σ·(z₁ − z₂), std √2·σ when the noise is
    /// right). `.canvas` keeps σ; `.perWindow` averages independent draws and shrinks it.
    func testCanvasNoiseKeepsTheStepsStandardDeviation() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        var ratios: [NoiseFusion: Double] = [:]
        for fusion in NoiseFusion.allCases {
            var s = settings(steps: 4, eta: 1, stride: 8)
            s.noiseFusion = fusion
            let start = pipeline.seededLatents(s).0
            let composition = Composition(regions: RegionParityTests.regions, bootstrapSteps: 0, fewStepMode: .off)
            let a = try run(s, composition, latents: start, steps: 1)
            s.seed = 7
            let b = try run(s, composition, latents: start, steps: 1)
            let scheduler = try pipeline.makeScheduler(s)
            var state = scheduler.makeViewState()
            let zeros = Tensor(zeros: [1, 4, 8, 8])
            let sigma = scheduler.stepMean(zeros, timestep: scheduler.timesteps[0], sample: zeros, state: &state).noiseScale
            XCTAssertGreaterThan(sigma, 0.1)
            let difference = zip(a.latents.data, b.latents.data).map { $0 - $1 }
            ratios[fusion] = Self.std(difference) / (2.0.squareRoot() * Double(sigma))
            print("noise fusion \(fusion.rawValue): fused noise std / step sigma = \(ratios[fusion]!) (\(a.views.count) windows, \(a.denoisesPerStep) denoises)")
        }
        XCTAssertEqual(ratios[.canvas]!, 1, accuracy: 0.03, "canvas noise keeps the step's σ")
        XCTAssertLessThan(ratios[.perWindow]!, 0.8, "per-window noise is averaged down")
    }

    // MARK: Quantized masks

    func testQuantizedMasksWidenAsNoiseFalls() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        let s = settings(steps: 4)
        let scheduler = try pipeline.makeScheduler(s)
        let levels = FewStepRegions.noiseLevels(alphasCumprod: try NoiseSchedule(config: pipeline.model.schedulerConfig).alphasCumprod,
                                                timesteps: scheduler.timesteps)
        XCTAssertEqual(levels, levels.sorted(by: >), "noise levels fall")
        let (rows, columns) = (64, 128)
        let plain = RegionParityTests.regions.map { $0.shape.latentMask(rows: rows, columns: columns, scale: 8) }
        let steps = FewStepRegions.quantizedMasks(plain, rows: rows, columns: columns, sigma: 1, levels: levels)
        for region in plain.indices {
            let counts = steps.map { $0[region].reduce(0, +) }
            print("region \(region + 1): plain \(plain[region].reduce(0, +)) latent pixels, quantized per step \(counts)")
            XCTAssertEqual(counts, counts.sorted(), "region \(region + 1) widens")
            XCTAssertLessThan(counts[0], plain[region].reduce(0, +), "region \(region + 1) starts inside its mask")
            XCTAssertGreaterThan(counts[0], 0, "region \(region + 1) keeps its core")
            for step in 1..<steps.count {
                XCTAssertTrue(zip(steps[step - 1][region], steps[step][region]).allSatisfy { $0 <= $1 },
                              "region \(region + 1): step \(step - 1)'s mask lies inside step \(step)'s")
            }
        }
        // Blur 0: the plain masks at every step.
        let unblurred = FewStepRegions.quantizedMasks(plain, rows: rows, columns: columns, sigma: 0, levels: levels)
        XCTAssertTrue(unblurred.allSatisfy { $0 == plain })
        XCTAssertEqual(FewStepRegions.blurred(plain[0], rows: rows, columns: columns, sigma: 0), plain[0])
        // Through the loop: regions widen and the background shrinks; plain masks kept in `masks`.
        let loop = try pipeline.regionLoop(s, composition: Composition(regions: RegionParityTests.regions, bootstrapSteps: 1))
        XCTAssertEqual(loop.masks, [loop.masks[0]] + plain)
        let background = (0..<4).map { loop.masks(atStep: $0)[0].reduce(0, +) }
        XCTAssertEqual(background, background.sorted(by: >), "the background shrinks")
        XCTAssertEqual(loop.masks(atStep: 3).dropFirst().map { $0 }, steps[3])
    }

    /// A zero-terminal-SNR schedule starts at level 1; capped at 0.999 a large region keeps its core.
    func testNoiseLevelsAreCappedForZeroTerminalSNR() {
        let levels = FewStepRegions.noiseLevels(alphasCumprod: [0.9, 0.5, 0], timesteps: [2, 1, 0])
        XCTAssertEqual(levels[0], FewStepRegions.maximumLevel)
        let mask = (0..<(32 * 32)).map { i -> Float in (8..<24).contains(i / 32) && (8..<24).contains(i % 32) ? 1 : 0 }
        let first = FewStepRegions.quantizedMasks([mask], rows: 32, columns: 32, sigma: 1, levels: levels)[0][0]
        XCTAssertEqual(first.reduce(0, +), 10 * 10, "the pixels 3 or more inside the 16x16 square")
    }

    func testBlurKeepsEdgesOnTheCanvasBorder() {
        // The left half of an 8x16 canvas: reflected at the border, the left columns stay 1.
        let mask = (0..<(8 * 16)).map { Float($0 % 16 < 8 ? 1 : 0) }
        let blurred = FewStepRegions.blurred(mask, rows: 8, columns: 16, sigma: 1)
        XCTAssertEqual(blurred[0], 1, accuracy: 1e-6)
        // Half a pixel either side of the edge: Φ(±0.5) of a unit Gaussian.
        XCTAssertEqual(blurred[7], 0.69, accuracy: 0.01)
        XCTAssertEqual(blurred[7] + blurred[8], 1, accuracy: 1e-6)
        XCTAssertEqual(blurred[15], 0, accuracy: 1e-6)
        // On a 360° canvas the right edge blends with the left.
        let wrapped = FewStepRegions.blurred(mask, rows: 8, columns: 16, sigma: 1, circular: true)
        XCTAssertEqual(wrapped[0], 0.69, accuracy: 0.01)
        XCTAssertEqual(wrapped[15], 0.31, accuracy: 0.01)
    }

    // MARK: Centred bootstrapping

    func testRollShiftsAndRestores() {
        let x = Tensor(shape: [1, 2, 3, 4], data: (0..<24).map(Float.init))
        let rolled = x.rolled(rows: 1, columns: -1)
        // torch.roll(x, (1, -1), dims=(-2, -1)): out[y, x] = in[(y - 1) % 3, (x + 1) % 4].
        XCTAssertEqual(Array(rolled.data[0..<12]), [9, 10, 11, 8, 1, 2, 3, 0, 5, 6, 7, 4])
        XCTAssertEqual(Array(rolled.data[12..<24]), [21, 22, 23, 20, 13, 14, 15, 12, 17, 18, 19, 16])
        XCTAssertEqual(rolled.rolled(rows: -1, columns: 1).data, x.data)
        XCTAssertEqual(x.rolled(rows: 3, columns: 8).data, x.data)

        // A mask in the window's left columns 0...9 and rows 20...43 of 64x64.
        var mask = [Float](repeating: 0, count: 64 * 64)
        for y in 20...43 { for x in 0...9 { mask[y * 64 + x] = 1 } }
        let roll = FewStepRegions.centringRoll(mask: mask, height: 64, width: 64)
        XCTAssertEqual(roll.rows, 0)
        XCTAssertEqual(roll.columns, 27)
        let moved = Tensor(shape: [1, 1, 64, 64], data: mask).rolled(rows: roll.rows, columns: roll.columns)
        XCTAssertEqual(FewStepRegions.centringRoll(mask: moved.data, height: 64, width: 64).columns, 0, "centred after the roll")
        XCTAssertEqual(moved.rolled(rows: -roll.rows, columns: -roll.columns).data, mask)
        XCTAssertTrue(FewStepRegions.centringRoll(mask: [Float](repeating: 0, count: 16), height: 4, width: 4) == (0, 0))
    }

    /// A region already at the window's centre is not moved: centred bootstrapping gives the plain
    /// result exactly; one off centre changes the bootstrapped step only.
    func testCentredBootstrapMovesOnlyOffCentreRegions() throws {
        let s = settings(steps: 4, width: 512)
        func composition(_ x: Double, centred: Bool) -> Composition {
            Composition(regions: [Region(shape: .rectangle(x: x, y: 128, width: 256, height: 256), prompt: RegionPrompt(prompt: "a calm sea"))],
                        bootstrapSteps: 1, fewStepMode: .on, fewStep: FewStepRegions(centredBootstrap: centred))
        }
        XCTAssertEqual(try run(s, composition(128, centred: true)).latents.data,
                       try run(s, composition(128, centred: false)).latents.data)
        let centred = try run(s, composition(0, centred: true), steps: 1).latents
        let plain = try run(s, composition(0, centred: false), steps: 1).latents
        XCTAssertGreaterThan(centred.maxAbsDifference(plain), 1e-3)
    }

    func testFewStepCompositionUsesWhiteBootstrapAndQuantizedMasks() throws {
        let s = settings(steps: 4, sampler: .eulerAncestral)
        let composition = Composition(regions: RegionParityTests.regions, bootstrapSteps: 2)
        XCTAssertTrue(composition.usesFewStep(steps: 4))
        XCTAssertFalse(composition.usesFewStep(steps: FewStepRegions.automaticBelowSteps))
        let loop = try run(s, composition)
        let bootstrap = try XCTUnwrap(loop.bootstrap)
        let white = bootstrap.backgrounds[0][0]
        XCTAssertTrue(bootstrap.backgrounds.allSatisfy { $0.allSatisfy { $0 == white } })
        XCTAssertNotEqual(loop.masks(atStep: 0), loop.masks(atStep: 3))
        XCTAssertTrue(loop.latents.data.allSatisfy(\.isFinite))
    }

    func testBadFewStepSettingsAreRejected() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        for std: Double in [-1, .nan, 1000] {
            let composition = Composition(regions: RegionParityTests.regions, bootstrapSteps: 1, fewStep: FewStepRegions(maskStd: std))
            XCTAssertThrowsError(try pipeline.validate(composition, for: settings(steps: 4))) {
                XCTAssertTrue("\($0)".contains("mask std must be between 0 and 256 pixels"), "\($0)")
            }
        }
    }

    // MARK: Unchanged with many steps

    /// 8 steps or more (automatic mode) run the plain region loop, bit for bit what `.off` runs;
    /// `RegionParityTests` holds that loop to the reference at 8 steps.
    func testManyStepsAreUnchanged() throws {
        for (sampler, eta) in [(Sampler.ddim, Float(1)), (.eulerAncestral, 0)] {
            var s = settings(steps: FewStepRegions.automaticBelowSteps, sampler: sampler, eta: eta)
            s.noiseFusion = .perWindow
            let automatic = try run(s, Composition(regions: RegionParityTests.regions, bootstrapSteps: 2))
            let off = try run(s, Composition(regions: RegionParityTests.regions, bootstrapSteps: 2, fewStepMode: .off))
            XCTAssertEqual(Self.hash(automatic.latents), Self.hash(off.latents), "\(sampler.displayName) eta \(eta)")
        }
    }
}
