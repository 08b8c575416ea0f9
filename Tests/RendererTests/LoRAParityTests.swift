import Foundation
import Models
import Renderer
import Tensors
import Weights
import XCTest

/// LoRAs merged at load against diffusers + PEFT running them (tools/reference/make_lora_fixtures.py):
/// a kohya LoCon LoRA (alpha 2, rank 4; attention, feed-forward, 1x1 and 3x3 convolutions,
/// time_emb_proj, conv_shortcut, samplers, text encoder) and a PEFT LoRA (alpha 8 in diffusers'
/// metadata), at several weights and together, on tiny-pano at 768x512, 6 DDIM steps, seed 1234.
/// Text embeddings within 1e-4 · max, final latents within 1e-3 · max.
final class LoRAParityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Case: Decodable {
        var file: String
        var text_encoder_weight: Float
        var unet_weight: Float
    }

    struct Cases: Decodable {
        var prompt: String
        var steps: Int
        var seed: UInt64
        var width: Int
        var height: Int
        var cases: [String: [Case]]
    }

    static func cases() throws -> Cases {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("golden/lora/cases.json"))
        return try JSONDecoder().decode(Cases.self, from: data)
    }

    static func lora(_ file: String) throws -> LoRA {
        try LoRA(url: fixtures.appendingPathComponent("lora/\(file)"))
    }

    /// Loads tiny-pano with `loras`, renders the case and compares with diffusers.
    func assertMatches(_ name: String, loras: [LoRAApplication], file: StaticString = #filePath, line: UInt = #line) throws {
        let cases = try Self.cases()
        let model = try StableDiffusionModel(folder: Self.fixtures.appendingPathComponent("models/tiny-pano"), loras: loras)
        let pipeline = PanoramaPipeline(model: model)
        var settings = PanoramaSettings(prompt: cases.prompt, width: cases.width, height: cases.height)
        settings.steps = cases.steps
        settings.seed = cases.seed
        let golden = try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("golden/lora/\(name).safetensors"))

        let guidance = try pipeline.guidance(settings)
        let embeddings = Tensor.concatenate([guidance.unconditional, guidance.conditional], dimension: 0)
        let expectedEmbeddings = try golden.tensor("encoder_hidden_states")
        let embeddingDiff = embeddings.maxAbsDifference(expectedEmbeddings)
        XCTAssertLessThanOrEqual(embeddingDiff, 1e-4 * expectedEmbeddings.maxAbs,
                                 "\(name): text embeddings, max diff \(embeddingDiff)", file: file, line: line)

        var loop = try pipeline.denoisingLoop(settings)
        while loop.next() != nil {}
        let expected = try golden.tensor("final_latent")
        let diff = loop.latents.maxAbsDifference(expected)
        XCTAssertLessThanOrEqual(diff, 1e-3 * expected.maxAbs, "\(name): final latents, max diff \(diff) of \(expected.maxAbs)",
                                 file: file, line: line)
    }

    func applications(_ name: String) throws -> [LoRAApplication] {
        let cases = try Self.cases()
        let list = try XCTUnwrap(cases.cases[name], "no case \(name) in cases.json")
        return try list.map {
            LoRAApplication(lora: try Self.lora($0.file), textEncoderWeight: $0.text_encoder_weight, unetWeight: $0.unet_weight)
        }
    }

    func testWithoutLoRA() throws { try assertMatches("none", loras: []) }

    func testKohyaAt0_7() throws { try assertMatches("kohya_0.7", loras: applications("kohya_0.7")) }

    func testKohyaAt1_3() throws { try assertMatches("kohya_1.3", loras: applications("kohya_1.3")) }

    func testPEFT() throws { try assertMatches("peft_1.0", loras: applications("peft_1.0")) }

    func testTwoLoRAs() throws { try assertMatches("kohya_0.7_peft_1.3", loras: applications("kohya_0.7_peft_1.3")) }

    func testSeparateTextEncoderAndUNetWeights() throws {
        try assertMatches("kohya_te0.5_unet1.2", loras: applications("kohya_te0.5_unet1.2"))
    }

    /// The kohya file covers every kind of module the issue names.
    func testKohyaFileCoversEveryModuleKind() throws {
        let lora = try Self.lora("kohya-locon.safetensors")
        XCTAssertEqual(lora.format, .kohya)
        let keys = lora.modules.map(\.key)
        for kind in ["attn1_to_q", "attn2_to_k", "to_out_0", "proj_in", "ff_net_0_proj", "ff_net_2", "resnets_0_conv1",
                     "time_emb_proj", "conv_shortcut", "downsamplers_0_conv", "upsamplers_0_conv", "lora_te_text_model_encoder_layers_0_self_attn_q_proj", "mlp_fc1"] {
            XCTAssertTrue(keys.contains { $0.contains(kind) }, "no \(kind) module")
        }
        XCTAssertTrue(lora.modules.contains { $0.down.shape.count == 4 && $0.down.shape[2] == 3 }, "no 3x3 convolution module")
        XCTAssertTrue(lora.modules.allSatisfy { $0.alpha == 2 && $0.rank == 4 && $0.scale == 0.5 })
        let peft = try Self.lora("peft-attn.safetensors")
        XCTAssertEqual(peft.format, .peft)
        XCTAssertTrue(peft.modules.allSatisfy { $0.alpha == 8 && $0.scale == 2 })
    }

    /// LoRAs and embeddings written by torch.save load through the safe pickle reader like their
    /// safetensors twins.
    func testPickledLoRAAndEmbeddingsLoad() throws {
        let pickled = try Self.lora("kohya-te.pt"), whole = try Self.lora("kohya-locon.safetensors")
        XCTAssertEqual(pickled.format, .kohya)
        XCTAssertEqual(pickled.modules.count, whole.modules.filter { $0.component == .textEncoder }.count)
        for module in pickled.modules {
            let twin = try XCTUnwrap(whole.modules.first { $0.key == module.key })
            XCTAssertEqual(module.down, twin.down)
            XCTAssertEqual(module.up, twin.up)
            XCTAssertEqual(module.alpha, twin.alpha)
        }
        let a = try TextualInversionEmbedding(url: Self.fixtures.appendingPathComponent("pickle/embedding.pt"))
        let b = try TextualInversionEmbedding(url: Self.fixtures.appendingPathComponent("pickle/embedding-paramdict.pt"))
        XCTAssertEqual([a.count, a.width], [2, 32])
        XCTAssertEqual(a.vectors, b.vectors)
    }
}
