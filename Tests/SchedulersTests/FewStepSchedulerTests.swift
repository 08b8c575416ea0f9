import Foundation
import Schedulers
import Tensors
import Weights
import XCTest

/// LCM, TCD, and Euler a / DDIM with "trailing" timesteps against diffusers' LCMScheduler,
/// TCDScheduler, EulerAncestralDiscreteScheduler and DDIMScheduler on the trajectories of
/// tools/reference/make_fewstep_scheduler_fixtures.py (with the noise diffusers drew, and the steps
/// at which it drew).
final class FewStepSchedulerTests: XCTestCase {
    private static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/golden")

    private struct Case: Decodable {
        let kind: String, file: String, steps: Int, eta: Float, timestep_spacing: String?
        let timesteps: [Int], model_timesteps: [Float], init_noise_sigma: Float, drawn: [Int]

        var sampler: Sampler {
            switch kind {
            case "lcm": return .lcm
            case "tcd": return .tcd
            case "euler_a": return .eulerAncestral
            default: return .ddim
            }
        }
    }

    private struct Fixture: Decodable {
        let cases: [String: Case]
    }

    private func loadCases() throws -> (SafeTensorsFile, [(name: String, config: DDIMSchedulerConfig, c: Case)]) {
        let file = try SafeTensorsFile(url: Self.golden.appendingPathComponent("fewstep.safetensors"))
        let json = try Data(contentsOf: Self.golden.appendingPathComponent("fewstep_cases.json"))
        let files = (try JSONSerialization.jsonObject(with: json) as! [String: Any])["files"] as! [String: Any]
        let configs = try files.mapValues { try DDIMSchedulerConfig.decode(JSONSerialization.data(withJSONObject: $0)) }
        let cases = try JSONDecoder().decode(Fixture.self, from: json).cases
        XCTAssertEqual(cases.count, 24)
        return (file, cases.keys.sorted().map { ($0, configs[cases[$0]!.file]!, cases[$0]!) })
    }

    /// `|actual − expected|` relative to the larger of 1 and the expected values' largest magnitude.
    private func relativeError(_ actual: Tensor, _ expected: Tensor) -> Float {
        XCTAssertEqual(actual.shape, expected.shape)
        return actual.maxAbsDifference(expected) / max(expected.maxAbs, 1)
    }

    /// 1e-5 of the largest magnitude (or of 1), measured ≤ 6e-7 for LCM, TCD and DDIM. Euler a's
    /// first step at σ = 4096 (zero terminal SNR) cancels: σ_down = √(σ_next² − σ_up²) loses ~4% per
    /// ulp of σ_up, and torch 2.13's float32 sqrt is not correctly rounded (σ_up is 1 ulp from IEEE's
    /// here), so that step is 6.6e-5 from diffusers' (diffusers' own is 9e-5 from the float64
    /// value) and the steps after it inherit some of it: 1e-4 there, as SamplerTests uses for Euler a.
    private func tolerance(_ c: Case) -> Float { c.kind == "euler_a" ? 1e-4 : 1e-5 }

    /// Every step of every trajectory, each from the previous Swift step (errors would compound):
    /// timesteps, where noise is drawn, the split of each step into mean and noise scale, and the
    /// sample after it (LCM's denoised and TCD's x_s too).
    func testTrajectoriesMatchDiffusers() throws {
        let (file, cases) = try loadCases()
        var worst: [String: Float] = [:]
        var steps = 0
        for (name, config, c) in cases {
            let scheduler = try c.sampler.makeScheduler(config: config, steps: c.steps, eta: c.eta,
                                                        timestepSpacing: c.timestep_spacing)
            XCTAssertEqual(scheduler.timesteps, c.timesteps, name)
            XCTAssertEqual(scheduler.timesteps.map { scheduler.unetTimestep($0) }, c.model_timesteps, name)
            XCTAssertEqual(scheduler.initNoiseSigma, c.init_noise_sigma, accuracy: 1e-6 * c.init_noise_sigma, name)
            XCTAssertEqual(scheduler.needsNoise, !c.drawn.isEmpty, name)
            var x = try file.tensor("\(name).start")
            var state = scheduler.makeViewState()
            for (i, t) in scheduler.timesteps.enumerated() {
                let output = try file.tensor("\(name).output_\(i)")
                let draws = c.drawn.contains(i)
                XCTAssertEqual(scheduler.drawsNoise(at: t), draws, "\(name) step \(i)")
                let noise = draws ? try file.tensor("\(name).noise_\(i)") : nil
                if let noise { XCTAssertEqual(noise.shape, x.shape, "\(name): noise has the latents' shape") }

                var meanState = state
                let (mean, noiseScale) = scheduler.stepMean(output, timestep: t, sample: x, state: &meanState)
                if !draws { XCTAssertEqual(noiseScale, 0, "\(name) step \(i)") }
                let next = scheduler.step(output, timestep: t, sample: x, state: &state, noise: noise)
                XCTAssertEqual(noise.map { mean.addingNoise($0, scale: noiseScale) }?.data ?? mean.data, next.data,
                               "\(name) step \(i): step is mean + noiseScale · noise")

                switch scheduler {
                case .lcm(let lcm):
                    let denoised = lcm.step(output, timestep: t, sample: x, noise: noise).denoised
                    let expected = try file.tensor(draws ? "\(name).denoised_\(i)" : "\(name).prev_\(i)")
                    worst["lcm denoised", default: 0] = max(worst["lcm denoised", default: 0],
                                                            relativeError(denoised, expected))
                case .tcd(let tcd):
                    let noised = tcd.step(output, timestep: t, sample: x, noise: noise).predNoisedSample
                    let expected = try file.tensor(draws ? "\(name).noised_\(i)" : "\(name).prev_\(i)")
                    worst["tcd noised", default: 0] = max(worst["tcd noised", default: 0],
                                                          relativeError(noised, expected))
                default: break
                }

                x = next
                let error = relativeError(x, try file.tensor("\(name).prev_\(i)"))
                XCTAssertLessThanOrEqual(error, tolerance(c), "\(name) step \(i) (t = \(t))")
                worst["\(c.kind) \(c.file)", default: 0] = max(worst["\(c.kind) \(c.file)", default: 0], error)
                steps += 1
            }
        }
        XCTAssertEqual(steps, 2 * (1 + 2 + 4 + 8 + 4 + 4 + 1 + 1 + 4 + 1 + 4 + 4))
        print("few-step schedulers, largest relative error per kind:",
              worst.keys.sorted().map { "\($0) \(worst[$0]!)" }.joined(separator: ", "))
    }

    func testStepCountsEtaAndSpacingErrors() throws {
        let sd = DDIMSchedulerConfig.stableDiffusion
        for sampler in [Sampler.lcm, .tcd] {
            XCTAssertThrowsError(try sampler.makeScheduler(config: sd, steps: 51)) {
                XCTAssertEqual($0 as? SchedulerError, .invalidStepsOnGrid(51, gridSize: 50, sampler: sampler.displayName))
            }
            XCTAssertThrowsError(try sampler.makeScheduler(config: sd, steps: 0))
            XCTAssertEqual(try sampler.makeScheduler(config: sd, steps: 50).timesteps.count, 50)
        }
        XCTAssertThrowsError(try LCMScheduler(config: sd, steps: 4, originalInferenceSteps: 1001))
        XCTAssertThrowsError(try Sampler.ddim.makeScheduler(config: sd, steps: 0)) {
            XCTAssertEqual($0 as? SchedulerError, .invalidSteps(0, trainTimesteps: 1000))
        }

        for sampler in [Sampler.lcm, .euler, .eulerAncestral, .dpmSolver2M] {
            XCTAssertThrowsError(try sampler.makeScheduler(config: sd, steps: 4, eta: 0.3)) {
                XCTAssertEqual($0 as? SchedulerError, .etaNotAccepted(0.3, sampler: sampler.displayName))
                XCTAssertTrue("\($0)".contains("only DDIM and TCD take eta"), "\($0)")
            }
        }
        XCTAssertThrowsError(try Sampler.tcd.makeScheduler(config: sd, steps: 4, eta: 1.5)) {
            XCTAssertEqual($0 as? SchedulerError, .invalidEta(1.5, sampler: "TCD", range: "0 to 1"))
        }
        XCTAssertThrowsError(try Sampler.ddim.makeScheduler(config: sd, steps: 4, eta: -0.1))
        XCTAssertThrowsError(try Sampler.tcd.makeScheduler(config: sd, steps: 4, eta: .nan))

        for sampler in Sampler.allCases {
            XCTAssertThrowsError(try sampler.makeScheduler(config: sd, steps: 4, timestepSpacing: "Trailing")) {
                XCTAssertEqual($0 as? SchedulerError, .unknownTimestepSpacing("Trailing"))
            }
        }
    }

    func testEtaDefaultsAndNoiseDraws() throws {
        XCTAssertEqual(Sampler.allCases.filter(\.acceptsEta), [.ddim, .tcd])
        XCTAssertEqual(Sampler.allCases.map(\.defaultEta), [0, 0, 0, 0, 0, 0, 0.3])
        guard case .tcd(let tcd) = try Sampler.tcd.makeScheduler(config: .stableDiffusion, steps: 4) else {
            return XCTFail("not TCD")
        }
        XCTAssertEqual(tcd.gamma, 0.3)
        XCTAssertEqual(tcd.timesteps.map { tcd.intermediateTimestep(after: $0) }, [531, 349, 181, 0])
        XCTAssertEqual(tcd.timesteps.map(tcd.drawsNoise(at:)), [true, true, true, false])
        let deterministic = try Sampler.tcd.makeScheduler(config: .stableDiffusion, steps: 4, eta: 0)
        XCTAssertFalse(deterministic.needsNoise)
        XCTAssertEqual(deterministic.timesteps.map(deterministic.drawsNoise(at:)), [false, false, false, false])

        let lcm = try Sampler.lcm.makeScheduler(config: .stableDiffusion, steps: 1)
        XCTAssertFalse(lcm.needsNoise)
        XCTAssertFalse(lcm.drawsNoise(at: 999))
        let lcm3 = try Sampler.lcm.makeScheduler(config: .stableDiffusion, steps: 3)
        XCTAssertEqual(lcm3.timesteps, [999, 679, 339])
        XCTAssertEqual(lcm3.timesteps.map(lcm3.drawsNoise(at:)), [true, true, false])
    }

    /// `timestepSpacing` replaces the file's (or the class default) for the schedulers that read
    /// it, as `from_config(config, timestep_spacing: …)`; LCM and TCD ignore it, as diffusers' do.
    func testTimestepSpacingOverride() throws {
        let sd = DDIMSchedulerConfig.stableDiffusion  // names no timestep_spacing
        func timesteps(_ sampler: Sampler, _ spacing: String?, steps: Int = 4) throws -> [Int] {
            try sampler.makeScheduler(config: sd, steps: steps, timestepSpacing: spacing).timesteps
        }
        XCTAssertEqual(try timesteps(.ddim, nil), [751, 501, 251, 1])
        XCTAssertEqual(try timesteps(.ddim, "trailing"), [999, 749, 499, 249])
        XCTAssertEqual(try timesteps(.ddim, "linspace"), [999, 666, 333, 0])
        XCTAssertEqual(try timesteps(.euler, nil), [999, 666, 333, 0])
        XCTAssertEqual(try timesteps(.eulerAncestral, "leading"), [751, 501, 251, 1])
        XCTAssertEqual(try timesteps(.eulerAncestral, "trailing", steps: 1), [999])
        XCTAssertEqual(try timesteps(.dpmSolver2M, nil), [999, 749, 500, 250])
        XCTAssertEqual(try timesteps(.dpmSolver2M, "trailing"), [999, 749, 499, 249])
        XCTAssertEqual(try timesteps(.dpmSolver2M, "leading"), [801, 601, 401, 201])
        for sampler in [Sampler.lcm, .tcd] {
            for spacing in Sampler.timestepSpacings {
                XCTAssertEqual(try timesteps(sampler, spacing), [999, 759, 499, 259], "\(sampler) \(spacing)")
            }
        }
        // a file's own spacing is replaced too (the bundled model's is "trailing")
        var demo = sd
        demo.timestepSpacing = "trailing"
        demo.timestepSpacingIsExplicit = true
        XCTAssertEqual(try Sampler.ddim.makeScheduler(config: demo, steps: 4, timestepSpacing: "leading").timesteps,
                       [751, 501, 251, 1])
    }

    /// LCM's and TCD's `add_noise` is DDIM's (checked against diffusers in DDIMSchedulerTests).
    func testAddNoiseIsDDIMs() throws {
        var generator = TorchGenerator(seed: 5)
        let clean = generator.randn([1, 4, 8, 8]), noise = generator.randn([1, 4, 8, 8])
        var demo = DDIMSchedulerConfig.stableDiffusion
        demo.predictionType = "v_prediction"
        demo.rescaleBetasZeroSnr = true
        for config in [DDIMSchedulerConfig.stableDiffusion, demo] {
            let ddim = try DDIMScheduler(config: config, steps: 4)
            for sampler in [Sampler.lcm, .tcd] {
                let s = try sampler.makeScheduler(config: config, steps: 4)
                for t in s.timesteps {
                    XCTAssertEqual(s.addNoise(clean, noise: noise, timestep: t).data,
                                   ddim.addNoise(clean, noise: noise, timestep: t).data, "\(sampler) t = \(t)")
                }
            }
        }
    }
}
