import Foundation
import Schedulers
import Tensors
import Weights
import XCTest

/// DPM-Solver++ 2M, Euler and Euler a against diffusers' DPMSolverMultistepScheduler,
/// EulerDiscreteScheduler and EulerAncestralDiscreteScheduler on the trajectories of
/// tools/reference/make_sampler_fixtures.py.
final class SamplerTests: XCTestCase {
    private static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/golden")

    private struct Case: Decodable {
        let kind: String, karras: Bool, steps: Int, begin: Int, timesteps: [Int], timestep_spacing: String
        let model_timesteps: [Float], init_noise_sigma: Float
    }

    private func loadCases(_ kinds: Set<String>) throws -> (SafeTensorsFile, [(String, DDIMSchedulerConfig, Case)]) {
        let file = try SafeTensorsFile(url: Self.golden.appendingPathComponent("sampler.safetensors"))
        let json = try Data(contentsOf: Self.golden.appendingPathComponent("sampler_cases.json"))
        let raw = try JSONSerialization.jsonObject(with: json) as! [String: [String: Any]]
        let cases = try JSONDecoder().decode([String: Case].self, from: json)
        let all = try raw.keys.sorted().map { name -> (String, DDIMSchedulerConfig, Case) in
            let configData = try JSONSerialization.data(withJSONObject: raw[name]!["file"]!)
            return (name, try DDIMSchedulerConfig.decode(configData), cases[name]!)
        }
        XCTAssertEqual(all.count, 15)
        return (file, all.filter { kinds.contains($0.2.kind) })
    }

    /// The case's first sample; for img2img cases also checks `addNoise` against diffusers' `add_noise`.
    private func startingSample(_ scheduler: AnyScheduler, _ file: SafeTensorsFile, _ name: String, _ c: Case) throws -> Tensor {
        let x = try file.tensor("\(name).start")
        if c.begin > 0 {
            let noisy = scheduler.addNoise(try file.tensor("\(name).clean"), noise: try file.tensor("\(name).noise"),
                                           timestep: scheduler.timesteps[c.begin])
            XCTAssertLessThanOrEqual(noisy.maxAbsDifference(x), 1e-5 * x.maxAbs, "\(name) add_noise")
        }
        return x
    }

    func testTimestepsAndSigmasMatchDiffusers() throws {
        let (file, cases) = try loadCases(["dpm"])
        for (name, config, c) in cases {
            let s = try DPMSolverMultistepScheduler(config: config, steps: c.steps, karras: c.karras)
            XCTAssertEqual(s.timestepSpacing, c.timestep_spacing, name)
            XCTAssertEqual(s.timesteps, c.timesteps, name)
            let expected = try file.tensor("\(name).sigmas")
            let actual = Tensor(shape: expected.shape, data: s.sigmas)
            XCTAssertLessThanOrEqual(actual.maxAbsDifference(expected), 2e-6 * expected.maxAbs, name)
        }
    }

    /// Every step of every trajectory, each from the previous Swift step (errors would compound).
    func testTrajectoriesMatchDiffusers() throws {
        let (file, cases) = try loadCases(["dpm"])
        var steps = 0
        for (name, config, c) in cases {
            let scheduler = AnyScheduler.dpmSolver(try DPMSolverMultistepScheduler(config: config, steps: c.steps,
                                                                                    karras: c.karras))
            var x = try startingSample(scheduler, file, name, c)
            var state = scheduler.makeViewState()
            for (i, t) in scheduler.timesteps.dropFirst(c.begin).enumerated() {
                x = scheduler.step(try file.tensor("\(name).output_\(i)"), timestep: t, sample: x, state: &state, noise: nil)
                let expected = try file.tensor("\(name).prev_\(i)")
                XCTAssertLessThanOrEqual(x.maxAbsDifference(expected), 1e-4 * max(expected.maxAbs, 1),
                                         "\(name) step \(i) (t = \(t))")
                steps += 1
            }
        }
        XCTAssertEqual(steps, 20 + 20 + 12 + 10 + 8 + 5 + 1 + 14 + 7)
    }

    /// Euler and Euler a: timesteps (fractional with "linspace"), σ, the initial noise scale, the
    /// scaled model input and every step (Euler a with the noise diffusers drew).
    func testEulerTrajectoriesMatchDiffusers() throws {
        let (file, cases) = try loadCases(["euler", "euler_a"])
        var steps = 0
        for (name, config, c) in cases {
            let euler = try EulerScheduler(config: config, steps: c.steps, ancestral: c.kind == "euler_a")
            XCTAssertEqual(euler.timestepSpacing, c.timestep_spacing, name)
            XCTAssertEqual(euler.timesteps, c.timesteps, name)
            XCTAssertEqual(euler.modelTimesteps, c.model_timesteps, name)
            let expected = try file.tensor("\(name).sigmas")
            XCTAssertLessThanOrEqual(Tensor(shape: expected.shape, data: euler.sigmas).maxAbsDifference(expected),
                                     2e-6 * expected.maxAbs, name)
            XCTAssertEqual(euler.initNoiseSigma, c.init_noise_sigma, accuracy: 1e-6 * c.init_noise_sigma, name)
            let scheduler = AnyScheduler.euler(euler)
            var x = try startingSample(scheduler, file, name, c)
            var state = scheduler.makeViewState()
            for (i, t) in scheduler.timesteps.dropFirst(c.begin).enumerated() {
                XCTAssertEqual(scheduler.unetTimestep(t), c.model_timesteps[c.begin + i], "\(name) step \(i)")
                let scaled = try file.tensor("\(name).scaled_\(i)")
                XCTAssertLessThanOrEqual(scheduler.scaleModelInput(x, timestep: t).maxAbsDifference(scaled),
                                         1e-4 * max(scaled.maxAbs, 1), "\(name) scaled input \(i)")
                let noise = c.kind == "euler_a" ? try file.tensor("\(name).noise_\(i)") : nil
                x = scheduler.step(try file.tensor("\(name).output_\(i)"), timestep: t, sample: x, state: &state, noise: noise)
                let expected = try file.tensor("\(name).prev_\(i)")
                XCTAssertLessThanOrEqual(x.maxAbsDifference(expected), 1e-4 * max(expected.maxAbs, 1),
                                         "\(name) step \(i) (t = \(t))")
                steps += 1
            }
        }
        XCTAssertEqual(steps, 20 + 12 + 10 + 15 + 10 + 14)
    }

    /// Two windows stepped alternately keep separate histories: the same as each stepped alone.
    func testViewsKeepTheirOwnHistory() throws {
        let scheduler = try DPMSolverMultistepScheduler(config: .stableDiffusion, steps: 6)
        var generator = TorchGenerator(seed: 3)
        let starts = [generator.randn([1, 4, 4, 4]), generator.randn([1, 4, 4, 4])]
        let outputs = scheduler.timesteps.map { _ in [generator.randn([1, 4, 4, 4]), generator.randn([1, 4, 4, 4])] }
        var together = starts, states = starts.map { _ in scheduler.makeViewState() }
        for (i, t) in scheduler.timesteps.enumerated() {
            for v in 0..<2 {
                together[v] = scheduler.step(outputs[i][v], timestep: t, sample: together[v], state: &states[v], noise: nil)
            }
        }
        for v in 0..<2 {
            var x = starts[v], state = scheduler.makeViewState()
            for (i, t) in scheduler.timesteps.enumerated() {
                x = scheduler.step(outputs[i][v], timestep: t, sample: x, state: &state, noise: nil)
            }
            XCTAssertEqual(x.data, together[v].data, "view \(v)")
        }
    }

    /// A configuration that names no timestep_spacing spaces DPM-Solver "linspace" (its own
    /// default), while DDIM keeps its "leading".
    func testMissingSpacingTakesThisSchedulersDefault() throws {
        let config = try DDIMSchedulerConfig.decode(Data(#"{"beta_schedule": "scaled_linear", "steps_offset": 1}"#.utf8))
        XCTAssertFalse(config.timestepSpacingIsExplicit)
        XCTAssertEqual(try DPMSolverMultistepScheduler(config: config, steps: 4).timesteps, [999, 749, 500, 250])
        XCTAssertEqual(try DDIMScheduler(config: config, steps: 4).timesteps, [751, 501, 251, 1])
    }

    func testSamplerNamesAndErrors() throws {
        XCTAssertEqual(Sampler(rawValue: "dpm++2m-karras"), .dpmSolver2MKarras)
        XCTAssertEqual(Sampler.allCases.map(\.displayName), ["DDIM", "DPM++ 2M", "DPM++ 2M Karras", "Euler", "Euler a", "LCM", "TCD"])
        XCTAssertThrowsError(try Sampler.euler.makeScheduler(config: DDIMSchedulerConfig(predictionType: "sample"), steps: 5))
        XCTAssertThrowsError(try Sampler.dpmSolver2M.makeScheduler(config: .stableDiffusion, steps: 20, eta: 0.5))
        XCTAssertThrowsError(try Sampler.dpmSolver2M.makeScheduler(config: .stableDiffusion, steps: 0)) {
            XCTAssertEqual($0 as? SchedulerError, .invalidSteps(0, trainTimesteps: 1000))
        }
        guard case .dpmSolver(let s) = try Sampler.dpmSolver2MKarras.makeScheduler(config: .stableDiffusion, steps: 5) else {
            return XCTFail("not a DPM-Solver scheduler")
        }
        XCTAssertTrue(s.karras)
    }
}
