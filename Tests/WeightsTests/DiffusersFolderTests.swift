import Foundation
import Tensors
import Weights
import XCTest

final class DiffusersFolderTests: XCTestCase {
    private let modelIndex = """
    {"_class_name": "StableDiffusionPipeline", "safety_checker": [null, null],
     "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
     "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "DDIMScheduler"]}
    """

    /// A model folder with model_index.json and the given component subfolders (empty).
    private func makeFolder(components: [String]) throws -> URL {
        let root = try makeTemporaryDirectory(self).appendingPathComponent("my-model")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try Data(modelIndex.utf8).write(to: root.appendingPathComponent("model_index.json"))
        for component in components {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(component),
                                                    withIntermediateDirectories: true)
        }
        return root
    }

    private func ones(_ shape: [Int]) -> Tensor { Tensor(repeating: 1, shape: shape) }

    func testNotADiffusersFolder() throws {
        let dir = try makeTemporaryDirectory(self)
        assertThrowsMessage(try DiffusersFolder(url: dir),
                            contains: [dir.path, "not a diffusers model folder", "no model_index.json",
                                       "model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/"])
        let absent = dir.appendingPathComponent("nope")
        assertThrowsMessage(try DiffusersFolder(url: absent), contains: [absent.path, "does not exist"])
    }

    func testMissingComponentFolder() throws {
        let root = try makeFolder(components: ["vae"])
        let folder = try DiffusersFolder(url: root)
        XCTAssertEqual(try folder.componentDirectory("vae").lastPathComponent, "vae")
        assertThrowsMessage(try folder.componentDirectory("unet"),
                            contains: ["model folder \(root.path): component 'unet' is listed in model_index.json "
                                       + "but \(root.path)/unet/ is missing"])
        assertThrowsMessage(try folder.weights(for: "unet"), contains: ["'unet'", "is missing"])
        assertThrowsMessage(try folder.componentDirectory("safety_checker"),
                            contains: ["has no component 'safety_checker'", "scheduler, text_encoder, unet, vae"])
    }

    func testBrokenPickleWeightsAreReportedByPath() throws {
        // .bin weights are read (PickleLoadingTests); a broken one is an error naming the file.
        let root = try makeFolder(components: ["unet"])
        try Data([0x80, 0x02]).write(to: root.appendingPathComponent("unet/diffusion_pytorch_model.bin"))
        let folder = try DiffusersFolder(url: root)
        assertThrowsMessage(try folder.weights(for: "unet"),
                            contains: [root.appendingPathComponent("unet/diffusion_pytorch_model.bin").path, "too short"])
    }

    func testNoWeightsAtAll() throws {
        let root = try makeFolder(components: ["unet"])
        assertThrowsMessage(try DiffusersFolder(url: root).weights(for: "unet"),
                            contains: ["no weights found", "diffusion_pytorch_model.safetensors", "model.safetensors",
                                       "diffusion_pytorch_model.fp16.safetensors", ".safetensors.index.json"])
        assertThrowsMessage(try DiffusersFolder(url: root).configURL(for: "unet"), contains: ["config.json"])
    }

    func testPrefersFullPrecisionAndFallsBackToFP16() throws {
        let root = try makeFolder(components: ["unet", "text_encoder"])
        let fp16 = root.appendingPathComponent("unet/diffusion_pytorch_model.fp16.safetensors")
        try SafeTensorsWriter.write([("w", ones([2]))], dtype: .f16, to: fp16)
        let folder = try DiffusersFolder(url: root)
        XCTAssertEqual(try folder.weights(for: "unet").files.map(\.url.lastPathComponent),
                       ["diffusion_pytorch_model.fp16.safetensors"])
        try SafeTensorsWriter.write([("w", ones([2]))], dtype: .f32,
                                    to: root.appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))
        let weights = try folder.weights(for: "unet")
        XCTAssertEqual(weights.files.map(\.url.lastPathComponent), ["diffusion_pytorch_model.safetensors"])
        XCTAssertEqual(weights.label, "unet")

        try SafeTensorsWriter.write([("x", ones([1]))], dtype: .f32,
                                    to: root.appendingPathComponent("text_encoder/model.safetensors"))
        XCTAssertEqual(try folder.weights(for: "text_encoder").names, ["x"])
    }

    func testShardedCheckpoint() throws {
        let root = try makeFolder(components: ["unet"])
        let unet = root.appendingPathComponent("unet")
        try SafeTensorsWriter.write([("a", ones([2])), ("b", ones([3]))], dtype: .f32,
                                    to: unet.appendingPathComponent("diffusion_pytorch_model-00001-of-00002.safetensors"))
        try SafeTensorsWriter.write([("c", ones([4]))], dtype: .bf16,
                                    to: unet.appendingPathComponent("diffusion_pytorch_model-00002-of-00002.safetensors"))
        let index = unet.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json")
        try Data("""
        {"metadata": {"total_size": 28}, "weight_map": {
          "a": "diffusion_pytorch_model-00001-of-00002.safetensors",
          "b": "diffusion_pytorch_model-00001-of-00002.safetensors",
          "c": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
        """.utf8).write(to: index)
        let weights = try DiffusersFolder(url: root).weights(for: "unet")
        XCTAssertEqual(weights.files.count, 2)
        XCTAssertEqual(weights.names, ["a", "b", "c"])
        XCTAssertEqual(try weights.tensor("c", shape: [4]).data, [1, 1, 1, 1])

        try Data(#"{"weight_map": {"a": "missing-shard.safetensors"}}"#.utf8).write(to: index)
        assertThrowsMessage(try DiffusersFolder(url: root).weights(for: "unet"),
                            contains: [index.path, "missing-shard.safetensors", "is missing"])
        try Data(#"{"weight_map": {"zz": "diffusion_pytorch_model-00001-of-00002.safetensors"}}"#.utf8).write(to: index)
        assertThrowsMessage(try DiffusersFolder(url: root).weights(for: "unet"),
                            contains: [index.path, "\"zz\"", "does not contain it"])
    }

    func testWeightSetShapeAndNameErrors() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("diffusion_pytorch_model.safetensors")
        try SafeTensorsWriter.write([("down_blocks.0.resnets.0.conv1.weight", ones([320, 4, 3, 3])),
                                     ("conv_in.bias", ones([320]))], dtype: .f16, to: url)
        let weights = try WeightSet(url: url, label: "unet")
        XCTAssertTrue(weights.contains("conv_in.bias"))
        XCTAssertEqual(weights.shape(of: "conv_in.bias"), [320])
        XCTAssertEqual(try weights.tensor("conv_in.bias", shape: [320]).count, 320)
        assertThrowsMessage(try weights.tensor("down_blocks.0.resnets.0.conv1.weight", shape: [64, 4, 3, 3]),
                            contains: ["unet: tensor \"down_blocks.0.resnets.0.conv1.weight\"", url.path,
                                       "has shape [320, 4, 3, 3] but the config expects [64, 4, 3, 3]; "
                                       + "the config.json does not match these weights"])
        assertThrowsMessage(try weights.tensor("conv_out.weight", shape: [4, 320, 3, 3]),
                            contains: ["unet: no tensor \"conv_out.weight\" in \(url.path)"])
        XCTAssertNil(try weights.tensorIfPresent("conv_out.bias", shape: [4]))
        XCTAssertNotNil(try weights.tensorIfPresent("conv_in.bias", shape: [320]))
        assertThrowsMessage(try weights.tensorIfPresent("conv_in.bias", shape: [4]), contains: ["has shape [320]"])
    }

    func testPrefixViews() throws {
        let dir = try makeTemporaryDirectory(self)
        let prefixed = dir.appendingPathComponent("sd.safetensors")
        try SafeTensorsWriter.write([("text_model.embeddings.token_embedding.weight", ones([10, 4])),
                                     ("text_model.final_layer_norm.weight", ones([4]))], dtype: .f32, to: prefixed)
        let bare = dir.appendingPathComponent("t5.safetensors")
        try SafeTensorsWriter.write([("embeddings.token_embedding.weight", ones([10, 4])),
                                     ("final_layer_norm.weight", ones([4]))], dtype: .f32, to: bare)

        for url in [prefixed, bare] {
            let weights = try WeightSet(url: url, label: "text_encoder").normalizingPrefix("text_model.")
            XCTAssertEqual(weights.names, ["embeddings.token_embedding.weight", "final_layer_norm.weight"])
            XCTAssertEqual(try weights.tensor("final_layer_norm.weight", shape: [4]).data, [1, 1, 1, 1])
            XCTAssertEqual(weights.info("final_layer_norm.weight")?.dtype, .f32)
        }

        let raw = try WeightSet(url: prefixed, label: "text_encoder")
        XCTAssertEqual(raw.prefix, "")
        assertThrowsMessage(try raw.tensor("final_layer_norm.weight"),
                            contains: ["no tensor \"final_layer_norm.weight\"", "text_model.final_layer_norm.weight"])
        let stripped = try WeightSet(url: bare, label: "text_encoder").strippingPrefix("text_model.")
        XCTAssertEqual(stripped.names, [])
        assertThrowsMessage(try stripped.tensor("final_layer_norm.weight"),
                            contains: ["\"text_model.final_layer_norm.weight\"", "without the prefix"])
    }

    func testOverlappingFilesAreRejected() throws {
        let dir = try makeTemporaryDirectory(self)
        let a = dir.appendingPathComponent("a.safetensors"), b = dir.appendingPathComponent("b.safetensors")
        try SafeTensorsWriter.write([("w", ones([1]))], dtype: .f32, to: a)
        try SafeTensorsWriter.write([("w", ones([1]))], dtype: .f32, to: b)
        assertThrowsMessage(try WeightSet(files: [SafeTensorsFile(url: a), SafeTensorsFile(url: b)]),
                            contains: ["\"w\"", "also stored in", a.path])
    }

    func testTinySDFolder() throws {
        let folder = try DiffusersFolder(url: SharedData.require(SharedData.tinySD))
        XCTAssertEqual(folder.modelIndex.presentComponents, ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])
        let config = try folder.config(UNetConfig.self, for: "unet")
        let unet = try folder.weights(for: "unet")
        let conv = try unet.tensor("conv_in.weight", shape: [config.blockOutChannels[0], config.inChannels, 3, 3])
        XCTAssertEqual(conv.shape, [32, 4, 3, 3])

        let clip = try folder.config(CLIPTextConfig.self, for: "text_encoder")
        // transformers 5 saved this one without `text_model.`; the view works either way.
        let text = try folder.weights(for: "text_encoder").normalizingPrefix("text_model.")
        XCTAssertEqual(try text.tensor("embeddings.token_embedding.weight", shape: [clip.vocabSize, clip.hiddenSize]).shape,
                       [1000, 32])
        let vae = try folder.weights(for: "vae")
        XCTAssertTrue(vae.contains("decoder.conv_in.weight"))
        assertThrowsMessage(try folder.weights(for: "tokenizer"), contains: ["tokenizer", "no weights found"])
    }
}
