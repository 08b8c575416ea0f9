import Foundation
import Schedulers
import Tensors
import Weights
import XCTest

/// DDIMScheduler against diffusers on the cases of tools/reference/make_fixtures.py.
final class DDIMSchedulerTests: XCTestCase {
    private static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/golden")

    private struct Case: Decodable {
        struct Call: Decodable {
            let num_inference_steps: Int, timestep: Int, eta: Float, key: String
        }
        let steps: [Int]
        let step_calls: [Call]
        let variance_noise: String?
    }

    private func loadCases() throws -> (SafeTensorsFile, [(String, DDIMSchedulerConfig, Case)]) {
        let file = try SafeTensorsFile(url: Self.golden.appendingPathComponent("scheduler.safetensors"))
        let json = try Data(contentsOf: Self.golden.appendingPathComponent("scheduler_cases.json"))
        let raw = try JSONSerialization.jsonObject(with: json) as! [String: [String: Any]]
        let cases = try JSONDecoder().decode([String: Case].self, from: json)
        let all = try raw.keys.sorted().map { name -> (String, DDIMSchedulerConfig, Case) in
            let configData = try JSONSerialization.data(withJSONObject: raw[name]!["config"]!)
            return (name, try DDIMSchedulerConfig.decode(configData), cases[name]!)
        }
        XCTAssertEqual(all.count, 5)
        return (file, all)
    }

    func testScheduleAndTimestepsMatchDiffusers() throws {
        let (file, cases) = try loadCases()
        for (name, config, c) in cases {
            let scheduler = try DDIMScheduler(config: config, steps: 10)
            let expected = try file.tensor("\(name).alphas_cumprod")
            let actual = Tensor(shape: expected.shape, data: scheduler.schedule.alphasCumprod)
            XCTAssertLessThanOrEqual(actual.maxAbsDifference(expected), 1e-6, name)
            XCTAssertEqual(scheduler.finalAlphaCumprod, try file.tensor("\(name).final_alpha_cumprod").data[0],
                           accuracy: 1e-6, name)
            for n in c.steps {
                var s = scheduler
                try s.setTimesteps(n)
                XCTAssertEqual(s.timesteps, try file.integers("\(name).timesteps_\(n)"), "\(name), \(n) steps")
            }
        }
    }

    func testStepsMatchDiffusers() throws {
        let (file, cases) = try loadCases()
        let sample = try file.tensor("sample"), output = try file.tensor("model_output")
        var checked = 0
        for (name, config, c) in cases {
            for call in c.step_calls {
                let scheduler = try DDIMScheduler(config: config, steps: call.num_inference_steps, eta: call.eta)
                let noise = try c.variance_noise.map { try file.tensor($0) }
                let r = scheduler.step(output, timestep: call.timestep, sample: sample, noise: noise)
                for (what, actual) in [("prev_sample", r.prevSample), ("pred_original_sample", r.predOriginalSample)] {
                    let expected = try file.tensor("\(call.key)_\(what)")
                    XCTAssertLessThanOrEqual(actual.maxAbsDifference(expected), 1e-4 * expected.maxAbs,
                                             "\(call.key) \(what) at t=\(call.timestep)")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 15)
    }

    func testAddNoiseMatchesDiffusers() throws {
        let file = try SafeTensorsFile(url: Self.golden.appendingPathComponent("scheduler.safetensors"))
        let scheduler = try DDIMScheduler(config: .stableDiffusion, steps: 10)
        let sample = try file.tensor("sample"), noise = try file.tensor("noise")
        for t in [1, 500, 999] {
            let expected = try file.tensor("sd.add_noise_t\(t)")
            XCTAssertLessThanOrEqual(scheduler.addNoise(sample, noise: noise, timestep: t).maxAbsDifference(expected),
                                     1e-5 * expected.maxAbs, "t=\(t)")
        }
    }

    func testRejectsImpossibleStepCountsAndUnknownSettings() throws {
        XCTAssertThrowsError(try DDIMScheduler(config: .stableDiffusion, steps: 0)) {
            XCTAssertTrue("\($0)".contains("0 inference steps"), "\($0)")
        }
        XCTAssertThrowsError(try DDIMScheduler(config: .stableDiffusion, steps: 1001))
        var config = DDIMSchedulerConfig.stableDiffusion
        config.betaSchedule = "sigmoid"
        XCTAssertThrowsError(try DDIMScheduler(config: config, steps: 10)) {
            XCTAssertTrue("\($0)".contains("beta_schedule \"sigmoid\""), "\($0)")
        }
        config = .stableDiffusion
        config.predictionType = "flow"
        XCTAssertThrowsError(try DDIMScheduler(config: config, steps: 10))
    }
}
