import Foundation
import Models
import Tensors
import Weights
import XCTest

/// A kohya LoRA on an SD 2.x model loads the same from its diffusers folder and from its single-file
/// checkpoint, whose OpenCLIP text encoder keeps query, key and value fused in one matrix: the
/// LoRA's q/k/v modules change the matching thirds of it.
final class LoRAModelTests: XCTestCase {
    func testSD2LoRAOnFolderAndSingleFileAgree() throws {
        let folder = try DiffusersFolder(url: Fixtures.model("tiny-sd2"))
        var tensors: [(name: String, tensor: Tensor)] = []
        var seed = 0
        func values(_ shape: [Int]) -> Tensor {
            seed += 1
            let n = shape.reduce(1, *), s = seed
            return Tensor(shape: shape, data: (0..<n).map { Float(sin(Double($0 * 5 + s * 11) * 0.61)) * 0.05 })
        }
        for (component, prefix, suffixes) in [
            ("text_encoder", "lora_te_", ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]),
            ("unet", "lora_unet_", ["to_q", "to_k", "to_v", "proj_in", "conv1", "time_emb_proj"]),
        ] {
            let set = try folder.weights(for: component)
            for name in set.names where name.hasSuffix(".weight") && suffixes.contains(where: { name.hasSuffix($0 + ".weight") }) {
                let shape = try XCTUnwrap(set.shape(of: name))
                var path = String(name.dropLast(".weight".count))
                if component == "text_encoder", !path.hasPrefix("text_model.") { path = "text_model." + path }
                let key = prefix + path.replacingOccurrences(of: ".", with: "_")
                let rank = 2
                tensors.append((key + ".lora_down.weight", values([rank] + shape.dropFirst())))
                tensors.append((key + ".lora_up.weight", values(shape.count == 4 ? [shape[0], rank, 1, 1] : [shape[0], rank])))
                tensors.append((key + ".alpha", Tensor(shape: [], data: [1])))
            }
        }
        XCTAssertGreaterThan(tensors.count, 30)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sd2-lora-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensorsWriter.write(tensors, dtype: .f32, to: url)
        let lora = [LoRAApplication(lora: try LoRA(url: url), weight: 0.8)]

        let plain = try StableDiffusionModel(folder: Fixtures.model("tiny-sd2"))
        let folderModel = try StableDiffusionModel(folder: Fixtures.model("tiny-sd2"), loras: lora)
        let single = try StableDiffusionModel(checkpoint: SingleFileLoadingTests.checkpoint("tiny-sd2"),
                                              configuration: .folder(Fixtures.model("tiny-sd2")), loras: lora)
        XCTAssertEqual(single.loras.map(\.name), [url.deletingPathExtension().lastPathComponent])
        let prompts = ["snowy mountains at sunset", ""]
        let a = try single.encode(prompts), b = try folderModel.encode(prompts), c = try plain.encode(prompts)
        XCTAssertLessThanOrEqual(a.maxAbsDifference(b), 1e-5 * b.maxAbs, "text embeddings")
        XCTAssertGreaterThan(b.maxAbsDifference(c), 1e-2 * c.maxAbs, "the LoRA changes the text embeddings")
        var generator = TorchGenerator(seed: 3)
        let latents = generator.randn([2, 4, 32, 32])
        let u = single.unet(latents, timestep: 501, encoderHiddenStates: b)
        let v = folderModel.unet(latents, timestep: 501, encoderHiddenStates: b)
        let w = plain.unet(latents, timestep: 501, encoderHiddenStates: b)
        XCTAssertLessThanOrEqual(u.maxAbsDifference(v), 1e-5 * v.maxAbs, "UNet")
        XCTAssertGreaterThan(v.maxAbsDifference(w), 1e-2 * w.maxAbs, "the LoRA changes the UNet")
    }

    /// A text-encoder LoRA named as SD 2.x single files name OpenCLIP (fused `attn_in_proj`,
    /// `mlp_c_fc`) changes the model as the same LoRA in transformers' names does.
    func testOpenCLIPNamedLoRAEqualsTransformersNamed() throws {
        let d = 48, r = 2, ff = try XCTUnwrap(DiffusersFolder(url: Fixtures.model("tiny-sd2")).weights(for: "text_encoder")
            .shape(of: "text_model.encoder.layers.0.mlp.fc1.weight")?.first)
        func values(_ shape: [Int], _ seed: Int) -> Tensor {
            Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { Float(cos(Double($0 * 3 + seed) * 0.7)) * 0.3 })
        }
        let down = values([r, d], 1), up = values([3 * d, r], 2), fcDown = values([r, d], 3), fcUp = values([ff, r], 4)
        func third(_ j: Int) -> Tensor { Tensor(shape: [d, r], data: Array(up.data[(j * d * r)..<((j + 1) * d * r)])) }
        let openCLIP: [(name: String, tensor: Tensor)] = [
            ("lora_te_model_transformer_resblocks_1_attn_in_proj.lora_down.weight", down),
            ("lora_te_model_transformer_resblocks_1_attn_in_proj.lora_up.weight", up),
            ("lora_te_model_transformer_resblocks_0_mlp_c_fc.lora_down.weight", fcDown),
            ("lora_te_model_transformer_resblocks_0_mlp_c_fc.lora_up.weight", fcUp),
        ]
        var transformers: [(name: String, tensor: Tensor)] = [
            ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", fcDown),
            ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", fcUp),
        ]
        for (j, x) in ["q", "k", "v"].enumerated() {
            transformers.append(("lora_te_text_model_encoder_layers_1_self_attn_\(x)_proj.lora_down.weight", down))
            transformers.append(("lora_te_text_model_encoder_layers_1_self_attn_\(x)_proj.lora_up.weight", third(j)))
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("openclip-lora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let a = folder.appendingPathComponent("openclip.safetensors"), b = folder.appendingPathComponent("hf.safetensors")
        try SafeTensorsWriter.write(openCLIP, dtype: .f32, to: a)
        try SafeTensorsWriter.write(transformers, dtype: .f32, to: b)
        let prompts = ["a lake at dawn"]
        let viaOpenCLIP = try StableDiffusionModel(checkpoint: SingleFileLoadingTests.checkpoint("tiny-sd2"),
                                                   configuration: .folder(Fixtures.model("tiny-sd2")),
                                                   loras: [LoRAApplication(lora: try LoRA(url: a), weight: 1.5)]).encode(prompts)
        let viaTransformers = try StableDiffusionModel(folder: Fixtures.model("tiny-sd2"),
                                                       loras: [LoRAApplication(lora: try LoRA(url: b), weight: 1.5)]).encode(prompts)
        let plain = try StableDiffusionModel(folder: Fixtures.model("tiny-sd2")).encode(prompts)
        XCTAssertLessThanOrEqual(viaOpenCLIP.maxAbsDifference(viaTransformers), 1e-5 * viaTransformers.maxAbs)
        XCTAssertGreaterThan(viaTransformers.maxAbsDifference(plain), 1e-2 * plain.maxAbs)
    }
}
