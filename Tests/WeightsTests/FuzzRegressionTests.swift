import Foundation
import XCTest
import Weights

/// Inputs found by the fuzz targets (Fuzz/, scripts/fuzz.sh) that trapped or hung before their
/// fix; each must now be refused with an error naming the file and the field. The inputs are in
/// Tests/Fixtures/fuzz.
final class FuzzRegressionTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fuzz")

    func input(_ name: String) throws -> Data { try Data(contentsOf: Self.fixtures.appendingPathComponent(name)) }

    /// The refusal's message, which must name `path` and `key`.
    func assertRefused<C: JSONConfiguration>(_ type: C.Type, _ data: Data, key: String, mentioning text: String? = nil,
                                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try C.decode(data, path: "fuzz/config.json"), file: file, line: line) { error in
            guard case let WeightsError.invalidConfig(path, badKey, problem)? = error as? WeightsError else {
                return XCTFail("unexpected error \(error)", file: file, line: line)
            }
            XCTAssertEqual(path, "fuzz/config.json", file: file, line: line)
            XCTAssertEqual(badKey, key, problem, file: file, line: line)
            if let text { XCTAssertTrue(problem.contains(text), problem, file: file, line: line) }
            XCTAssertTrue("\(error)".contains(key), "\(error)", file: file, line: line)
        }
    }

    /// Found by the `configs` target: a scheduler config with beta_start 1.00085 made the
    /// cumulative alphas negative, and DPM++ 2M Karras trapped converting a NaN sigma to a timestep.
    func testSchedulerBetaAboveOneIsRefused() throws {
        assertRefused(DDIMSchedulerConfig.self, try input("scheduler-beta-start-above-1.json"), key: "beta_start",
                      mentioning: "below 1")
    }

    /// Found by the `configs` target after that fix: beta_start 0.80085, in range, made the
    /// cumulative alphas underflow to 0 in float32, the sigmas infinite, and DPM++ 2M Karras trap.
    func testSchedulerBetasThatUnderflowAreRefused() throws {
        assertRefused(DDIMSchedulerConfig.self, try input("scheduler-betas-underflow.json"), key: "beta_start",
                      mentioning: "cumulative product")
        assertRefused(DDIMSchedulerConfig.self, Data(#"{"num_train_timesteps": 2, "trained_betas": [0.9999999999999999, 0.9999999999999999]}"#.utf8),
                      key: "trained_betas")
        XCTAssertNoThrow(try DDIMSchedulerConfig.decode(Data(#"{"beta_schedule": "squaredcos_cap_v2"}"#.utf8)))
        XCTAssertNoThrow(try DDIMSchedulerConfig.decode(Data(#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": true}"#.utf8)))
    }

    /// Found by the `configs` target after the second fix: beta_start 0 gave a first sigma of 0,
    /// whose logarithm made DPM++ 2M Karras trap.
    func testSchedulerBetaStartZeroIsRefused() throws {
        assertRefused(DDIMSchedulerConfig.self, try input("scheduler-beta-start-zero.json"), key: "beta_start",
                      mentioning: "above 0")
        assertRefused(DDIMSchedulerConfig.self, Data(#"{"num_train_timesteps": 2, "trained_betas": [0, 0.5]}"#.utf8),
                      key: "trained_betas")
    }

    /// The same rule for every beta, and the sizes the schedule's arrays are allocated from.
    func testSchedulerSizesAndBetasAreBounded() throws {
        func config(_ fields: String) -> Data { Data("{\"beta_schedule\": \"linear\", \(fields)}".utf8) }
        assertRefused(DDIMSchedulerConfig.self, config("\"num_train_timesteps\": 1000000000"), key: "num_train_timesteps")
        assertRefused(DDIMSchedulerConfig.self, config("\"beta_end\": -0.5"), key: "beta_end")
        assertRefused(DDIMSchedulerConfig.self, config("\"beta_start\": 0.001, \"beta_end\": 0"), key: "beta_end")
        assertRefused(DDIMSchedulerConfig.self, config("\"steps_offset\": 5000"), key: "steps_offset")
        assertRefused(DDIMSchedulerConfig.self, config("\"num_train_timesteps\": 2, \"trained_betas\": [0.5, 1.5]"),
                      key: "trained_betas")
        XCTAssertNoThrow(try DDIMSchedulerConfig.decode(config("\"beta_start\": 0.0001, \"beta_end\": 0.02")))
    }

    /// Sizes of the model configs are bounded before a model is built from them, as CLIP's are.
    func testModelConfigSizesAreBounded() throws {
        func data(_ text: String) -> Data { Data(text.utf8) }
        assertRefused(UNetConfig.self, data(#"{"layers_per_block": 1000000000}"#), key: "layers_per_block")
        assertRefused(UNetConfig.self, data(#"{"attention_head_dim": 0}"#), key: "attention_head_dim")
        assertRefused(UNetConfig.self, data(#"{"norm_num_groups": 0}"#), key: "norm_num_groups")
        assertRefused(UNetConfig.self, data(#"{"block_out_channels": [320, -1, 1280, 1280]}"#), key: "block_out_channels")
        assertRefused(AutoencoderKLConfig.self, data(#"{"layers_per_block": -1}"#), key: "layers_per_block")
        assertRefused(AutoencoderKLConfig.self, data(#"{"latent_channels": 4611686018427387904}"#), key: "latent_channels")
        assertRefused(AutoencoderKLConfig.self, data(#"{"norm_num_groups": 0}"#), key: "norm_num_groups")
        assertRefused(AutoencoderTinyConfig.self, data(#"{"num_decoder_blocks": [3, 3, 3, 1000000000]}"#),
                      key: "num_decoder_blocks")
        for folder in ["tiny-sd1", "tiny-sd2", "tiny-pano", "tiny-lcm", "tiny-inpaint"] {
            let model = Self.fixtures.deletingLastPathComponent().appendingPathComponent("models/\(folder)")
            XCTAssertNoThrow(try UNetConfig.load(from: model.appendingPathComponent("unet/config.json")), folder)
            XCTAssertNoThrow(try AutoencoderKLConfig.load(from: model.appendingPathComponent("vae/config.json")), folder)
            XCTAssertNoThrow(try DDIMSchedulerConfig.load(from: model.appendingPathComponent("scheduler/scheduler_config.json")), folder)
        }
    }
}
