import Foundation
import Tensors
import Weights
import XCTest

/// LoRA files read, checked and merged; every kind of bad file refused with a message that names it.
final class LoRATests: XCTestCase {
    var folder: URL!

    override func setUpWithError() throws {
        folder = try makeTemporaryDirectory(self)
    }

    /// Deterministic, non-trivial values.
    func values(_ shape: [Int], seed: Int) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, data: (0..<n).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) })
    }

    func write(_ name: String, _ tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws -> URL {
        let url = folder.appendingPathComponent(name)
        try SafeTensorsWriter.write(tensors.map { (name: $0.0, tensor: $0.1) }, dtype: .f32, metadata: metadata, to: url)
        return url
    }

    /// A tiny "model": a linear layer, a 3x3 convolution and a text-encoder projection.
    func modelSets() throws -> (unet: WeightSet, text: WeightSet) {
        let unet = try write("unet.safetensors", [
            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", values([6, 5], seed: 1)),
            ("down_blocks.0.resnets.0.conv1.weight", values([4, 3, 3, 3], seed: 2)),
            ("down_blocks.0.resnets.0.conv1.bias", values([4], seed: 3)),
        ])
        let text = try write("text.safetensors", [
            ("text_model.encoder.layers.0.self_attn.q_proj.weight", values([5, 5], seed: 4)),
        ])
        return (try WeightSet(url: unet), try WeightSet(url: text))
    }

    func assertLoRAError(_ body: @autoclosure () throws -> Any, _ fragments: [String],
                         file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected a LoRA error containing \(fragments)", file: file, line: line)
        } catch let error as LoRAError {
            for fragment in fragments where !error.description.contains(fragment) {
                XCTFail("message \"\(error)\" lacks \"\(fragment)\"", file: file, line: line)
            }
        } catch {
            XCTFail("expected a LoRAError, got \(error)", file: file, line: line)
        }
    }

    /// W + m · alpha/rank · up · down, computed element by element, for a linear and a 3x3 module.
    func testKohyaMergeEqualsTheDefinition() throws {
        let (unet, text) = try modelSets()
        let q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        let conv = "lora_unet_down_blocks_0_resnets_0_conv1"
        let te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
        let url = try write("k.safetensors", [
            (q + ".lora_down.weight", values([2, 5], seed: 5)), (q + ".lora_up.weight", values([6, 2], seed: 6)),
            (q + ".alpha", Tensor(shape: [], data: [3])),
            (conv + ".lora_down.weight", values([2, 3, 3, 3], seed: 7)), (conv + ".lora_up.weight", values([4, 2, 1, 1], seed: 8)),
            (te + ".lora_down.weight", values([1, 5], seed: 9)), (te + ".lora_up.weight", values([5, 1], seed: 10)),
        ])
        let lora = try LoRA(url: url)
        XCTAssertEqual(lora.format, .kohya)
        XCTAssertEqual(lora.name, "k")
        let merged = try LoRAMerge.apply([LoRAApplication(lora: lora, textEncoderWeight: 0.5, unetWeight: 0.8)],
                                         unet: unet, textEncoder: text)
        func expected(_ w: Tensor, _ up: Tensor, _ down: Tensor, scale: Float) -> Tensor {
            let (out, r) = (up.shape[0], down.shape[0]), cols = down.count / r
            var data = w.data
            for o in 0..<out { for c in 0..<cols { for k in 0..<r { data[o * cols + c] += scale * up.data[o * r + k] * down.data[k * cols + c] } } }
            return Tensor(shape: w.shape, data: data)
        }
        let qName = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
        XCTAssertLessThan(try merged.unet.tensor(qName).maxAbsDifference(
            expected(try unet.tensor(qName), values([6, 2], seed: 6), values([2, 5], seed: 5), scale: 0.8 * 3 / 2)), 1e-5)
        let convName = "down_blocks.0.resnets.0.conv1.weight"
        XCTAssertLessThan(try merged.unet.tensor(convName, shape: [4, 3, 3, 3]).maxAbsDifference(
            expected(try unet.tensor(convName), values([4, 2, 1, 1], seed: 8), values([2, 3, 3, 3], seed: 7), scale: 0.8)), 1e-5)
        let teName = "text_model.encoder.layers.0.self_attn.q_proj.weight"
        XCTAssertLessThan(try merged.textEncoder.tensor(teName).maxAbsDifference(
            expected(try text.tensor(teName), values([5, 1], seed: 10), values([1, 5], seed: 9), scale: 0.5)), 1e-5)
        // the model's view without the text_model. prefix sees the change too; other tensors are untouched
        XCTAssertEqual(try merged.textEncoder.normalizingPrefix("text_model.").tensor("encoder.layers.0.self_attn.q_proj.weight"),
                       try merged.textEncoder.tensor(teName))
        XCTAssertEqual(try merged.unet.tensor("down_blocks.0.resnets.0.conv1.bias"), try unet.tensor("down_blocks.0.resnets.0.conv1.bias"))
        XCTAssertEqual(merged.unet.changedNames, [qName, convName])
    }

    /// PEFT names, alphas from diffusers' metadata (with an alpha pattern and rsLoRA), a weight of 0.
    func testPEFTAlphasFromMetadata() throws {
        let (unet, text) = try modelSets()
        let q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        let te = "text_encoder.encoder.layers.0.self_attn.q_proj"
        let metadata = #"{"unet.lora_alpha": 8, "unet.r": 4, "unet.alpha_pattern": {"attn1.to_q": 2}, "text_encoder.lora_alpha": 4.0, "text_encoder.use_rslora": true}"#
        let url = try write("p.safetensors", [
            (q + ".lora_A.weight", values([4, 5], seed: 1)), (q + ".lora_B.weight", values([6, 4], seed: 2)),
            (te + ".lora_A.weight", values([4, 5], seed: 3)), (te + ".lora_B.weight", values([5, 4], seed: 4)),
        ], metadata: ["lora_adapter_metadata": metadata])
        let lora = try LoRA(url: url)
        XCTAssertEqual(lora.format, .peft)
        let byComponent = Dictionary(uniqueKeysWithValues: lora.modules.map { ($0.component, $0) })
        XCTAssertEqual(byComponent[.unet]?.scale, 0.5)          // alpha 2 from the pattern / rank 4
        XCTAssertEqual(byComponent[.textEncoder]?.scale, 2)     // rsLoRA: 4 / √4
        let merged = try LoRAMerge.apply([LoRAApplication(lora: lora, textEncoderWeight: 0, unetWeight: 1)], unet: unet, textEncoder: text)
        XCTAssertEqual(merged.textEncoder.changedNames, [])
        XCTAssertEqual(merged.unet.changedNames.count, 1)

        let bare = try write("bare.safetensors", [(q + ".lora_A.weight", values([4, 5], seed: 1)), (q + ".lora_B.weight", values([6, 4], seed: 2))])
        XCTAssertEqual(try LoRA(url: bare).modules.first?.scale, 1, "no alpha: scale 1 (alpha = rank)")
    }

    func testRefusedKinds() throws {
        let m = "lora_unet_down_blocks_0_resnets_0_conv1"
        let cases: [([(String, Tensor)], [String])] = [
            ([(m + ".hada_w1_a", values([4, 2], seed: 1)), (m + ".hada_w1_b", values([2, 27], seed: 2))], ["LoHa", "hada_w1_a"]),
            ([(m + ".lokr_w1", values([2, 2], seed: 1)), (m + ".lokr_w2", values([2, 27], seed: 2))], ["LoKr"]),
            ([(m + ".lora_down.weight", values([2, 3, 3, 3], seed: 1)), (m + ".lora_up.weight", values([4, 2, 1, 1], seed: 2)),
              (m + ".lora_mid.weight", values([2, 2, 3, 3], seed: 3))], ["Tucker", "lora_mid"]),
            ([(m + ".lora_down.weight", values([2, 27], seed: 1)), (m + ".lora_up.weight", values([4, 2], seed: 2)),
              (m + ".dora_scale", values([4, 1], seed: 3))], ["DoRA"]),
            ([("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", values([2, 5], seed: 1)),
              ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", values([5, 2], seed: 2))],
             ["another architecture", "second text encoder", "SDXL"]),
            ([("model.diffusion_model.input_blocks.0.0.weight", values([2, 2], seed: 1))], ["not a LoRA in a known layout"]),
            ([(m + ".lora_down.weight", values([2, 27], seed: 1)), (m + ".lora_up.weight", values([4, 2], seed: 2)),
              (m + ".scale", values([1], seed: 3))], ["unknown key", ".scale"]),
            ([(m + ".lora_down.weight", values([2, 27], seed: 1))], ["no lora_up"]),
            ([(m + ".lora_down.weight", values([3, 27], seed: 1)), (m + ".lora_up.weight", values([4, 2], seed: 2))],
             ["ranks", "disagree"]),
            ([(m + ".lora_down.weight", Tensor(shape: [2, 2], data: [1, .nan, 0, 1])), (m + ".lora_up.weight", values([4, 2], seed: 2))],
             ["not finite"]),
            ([(m + ".lora_down.weight", values([2, 27], seed: 1)), (m + ".lora_up.weight", values([4, 2], seed: 2)),
              (m + ".alpha", Tensor(shape: [2], data: [1, 2]))], ["should be one number"]),
            ([], ["holds no tensors"]),
        ]
        for (i, (tensors, fragments)) in cases.enumerated() {
            let url = try write("bad\(i).safetensors", tensors)
            assertLoRAError(try LoRA(url: url), [url.lastPathComponent] + fragments)
        }
        assertLoRAError(try LoRA(url: folder.appendingPathComponent("absent.safetensors")), ["absent.safetensors", "no such file"])
        let dora = try write("dora.safetensors", [("unet.a.lora_A.weight", values([1, 2], seed: 1)), ("unet.a.lora_B.weight", values([2, 1], seed: 1))],
                             metadata: ["lora_adapter_metadata": #"{"unet.use_dora": true}"#])
        assertLoRAError(try LoRA(url: dora), ["DoRA"])
    }

    /// A LoRA for another model: some modules missing, or a module of another size.
    func testMismatchedModelsAreRefusedWithCounts() throws {
        let (unet, text) = try modelSets()
        let q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        let partial = try LoRA(url: try write("partial.safetensors", [
            (q + ".lora_down.weight", values([2, 5], seed: 1)), (q + ".lora_up.weight", values([6, 2], seed: 2)),
            ("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", values([2, 5], seed: 1)),
            ("lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", values([6, 2], seed: 2)),
        ]))
        assertLoRAError(try LoRAMerge.apply([LoRAApplication(lora: partial)], unet: unet, textEncoder: text),
                        ["partial.safetensors", "only 1 of its 2 modules", "lora_unet_mid_block_attentions_0_proj_in"])
        let wide = try LoRA(url: try write("wide.safetensors", [
            (q + ".lora_down.weight", values([2, 7], seed: 1)), (q + ".lora_up.weight", values([6, 2], seed: 2)),
        ]))
        assertLoRAError(try LoRAMerge.apply([LoRAApplication(lora: wide)], unet: unet, textEncoder: text),
                        ["wide.safetensors", "[6, 7]", "[6, 5]", "another architecture"])
    }
}
