import Foundation
import Models
import Tensors
import Weights
import XCTest

/// Each model component against diffusers / transformers on the tiny reference models
/// (tools/reference/make_fixtures.py). Criterion: max|a − b| ≤ 1e-4 · max|b|.
final class ParityTests: XCTestCase {
    private static let models = ["tiny-sd1", "tiny-sd2"]

    private func load(_ name: String) throws -> StableDiffusionModel {
        try StableDiffusionModel(folder: Fixtures.model(name))
    }

    private func ids(_ file: SafeTensorsFile) throws -> [[Int]] {
        let flat = try file.integers("input_ids")
        return stride(from: 0, to: flat.count, by: 77).map { Array(flat[$0..<($0 + 77)]) }
    }

    func testTextEncoder() throws {
        for name in Self.models {
            let model = try load(name)
            let golden = try Fixtures.golden(name, "text_encoder.safetensors")
            let tokens = try ids(golden)
            assertParity(try model.textEncoder(tokens), try golden.tensor("last_hidden_state"), "\(name) last_hidden_state")
            assertParity(try model.textEncoder(tokens, clipSkip: 1), try golden.tensor("penultimate"), "\(name) clip skip 1")
            assertParity(try model.textEncoder.pooled(tokens), try golden.tensor("pooler_output"), "\(name) pooled")
        }
    }

    func testTokenizerOfEachModelMatchesTheGoldenIDs() throws {
        let prompts = ["a photo of an astronaut riding a horse on mars", "",
                       "A  Sunlit MOUNTAIN-lake panorama, 360° view; isn't it (HDR) 4k!!"]
        for name in Self.models {
            let model = try load(name)
            let golden = try ids(try Fixtures.golden(name, "text_encoder.safetensors"))
            for (i, prompt) in prompts.enumerated() {
                XCTAssertEqual(model.tokenizer(prompt).ids, golden[i], "\(name): \(prompt)")
            }
        }
    }

    func testUNetInClassifierFreeGuidanceLayout() throws {
        for name in Self.models {
            let model = try load(name)
            let golden = try Fixtures.golden(name, "unet.safetensors")
            let input = try golden.tensor("latent_model_input")
            let context = try golden.tensor("encoder_hidden_states")
            for t in [999, 1] {
                let eps = model.unet(input, timestep: Float(t), encoderHiddenStates: context)
                assertParity(eps, try golden.tensor("eps_t\(t)"), "\(name) UNet t=\(t)")
                let (u, c) = (eps.batch(0), eps.batch(1))
                assertParity(u + (c - u) * 7.5, try golden.tensor("eps_cfg_t\(t)"), "\(name) CFG t=\(t)")
            }
        }
    }

    func testUNetWithTheFeedForwardInBlocksOfRows() throws {
        // The tiny models' token rows fit one block; blocks of 7 rows (the last one short) must
        // give the same result (rows are independent; only a BLAS that blocks rows differently
        // could change the last bits).
        defer { Compute.feedForwardBlockRows = nil }
        let model = try load("tiny-sd1")
        let golden = try Fixtures.golden("tiny-sd1", "unet.safetensors")
        let input = try golden.tensor("latent_model_input")
        let context = try golden.tensor("encoder_hidden_states")
        let whole = model.unet(input, timestep: 999, encoderHiddenStates: context)
        Compute.feedForwardBlockRows = 7
        let blocked = model.unet(input, timestep: 999, encoderHiddenStates: context)
        XCTAssertLessThanOrEqual(blocked.maxAbsDifference(whole), 1e-6 * whole.maxAbs)
    }

    func testUNetBatchOfFourViews() throws {
        let model = try load("tiny-sd1")
        let golden = try Fixtures.golden("tiny-sd1", "unet.safetensors")
        let eps = model.unet(try golden.tensor("b4_input"), timestep: 500,
                             encoderHiddenStates: try golden.tensor("b4_encoder_hidden_states"))
        assertParity(eps, try golden.tensor("b4_eps"), "batch of 4 at t=500")
    }

    func testVAEDecodeAndEncode() throws {
        for name in Self.models {
            let model = try load(name)
            let golden = try Fixtures.golden(name, "vae.safetensors")
            let decoded = model.vae.decode(try golden.tensor("latent") / model.vae.scalingFactor)
            assertParity(decoded, try golden.tensor("decoded"), "\(name) VAE decode")
            let (mean, std) = try model.vae.encode(try golden.tensor("image"))
            assertParity(mean, try golden.tensor("encoded_mean"), "\(name) VAE encode mean")
            assertParity(std, try golden.tensor("encoded_std"), "\(name) VAE encode std")
        }
    }
}
