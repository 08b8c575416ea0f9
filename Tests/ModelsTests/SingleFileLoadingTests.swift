import Foundation
import Models
import Tensors
import Weights
import XCTest

/// The tiny models as single-file checkpoints in the original layout (written and checked against
/// diffusers' `from_single_file` by tools/reference/make_single_file_fixtures.py) load the same
/// weights as their diffusers folders, and the models built from them compute the same.
final class SingleFileLoadingTests: XCTestCase {
    static func checkpoint(_ name: String) -> URL {
        Fixtures.root.appendingPathComponent("models/single-file/\(name).safetensors")
    }

    /// Every tensor of every component: same names (the text encoder's `text_model.` prefix and
    /// `position_ids` aside) and values within `relative` (tiny-sd1's file is stored as fp16).
    func assertSameWeights(_ name: String, relative: Float, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = try DiffusersFolder(url: Fixtures.model(name))
        let single = try SingleFileCheckpoint(url: Self.checkpoint(name))
        let pairs = [("unet", single.unet), ("vae", single.vae), ("text_encoder", single.textEncoder.normalizingPrefix("text_model."))]
        for (component, mapped) in pairs {
            var reference = try folder.weights(for: component)
            if component == "text_encoder" { reference = reference.normalizingPrefix("text_model.") }
            let expected = reference.names.filter { !$0.hasSuffix("position_ids") }
            XCTAssertEqual(mapped.names, expected, "\(name)/\(component): the same tensor names", file: file, line: line)
            for tensorName in expected where mapped.contains(tensorName) {
                let a = try mapped.tensor(tensorName), b = try reference.tensor(tensorName)
                XCTAssertEqual(a.count, b.count, "\(component) \(tensorName)", file: file, line: line)
                let tolerance = relative * max(b.maxAbs, 1e-6)
                XCTAssertLessThanOrEqual(a.reshaped(b.shape).maxAbsDifference(b), tolerance,
                                         "\(name)/\(component) \(tensorName)", file: file, line: line)
            }
        }
    }

    func testTinySD2WeightsAreTheFoldersExactly() throws {
        // OpenCLIP layout: fused in_proj split into thirds; VAE attention as 1x1 convolutions.
        try assertSameWeights("tiny-sd2", relative: 0)
    }

    func testTinySD1WeightsAreTheFoldersInFP16() throws {
        try assertSameWeights("tiny-sd1", relative: 1.0 / 1024)
    }

    func testModelFromSingleFileComputesLikeTheFolder() throws {
        let folderModel = try StableDiffusionModel(folder: Fixtures.model("tiny-sd2"))
        let single = try StableDiffusionModel(checkpoint: Self.checkpoint("tiny-sd2"),
                                              configuration: .folder(Fixtures.model("tiny-sd2")))
        XCTAssertEqual(single.name, "tiny-sd2")
        XCTAssertEqual(single.schedulerConfig, folderModel.schedulerConfig)
        try assertSameOutputs(single, folderModel, prompts: ["snowy mountains at sunset", ""], seed: 3,
                              latentSize: 32, timestep: 501)
    }

    func testStandardConfigurationsRefuseTinyShapes() throws {
        // The tiny models' 32/48-wide cross-attention is neither SD 1.x nor 2.x: the error says to
        // give a folder of the architecture instead.
        XCTAssertThrowsError(try StableDiffusionModel(
            checkpoint: Self.checkpoint("tiny-sd1"),
            configuration: .standard(tokenizer: Fixtures.model("tiny-sd1").appendingPathComponent("tokenizer"), predictionType: nil))) {
            XCTAssertTrue("\($0)".contains("neither SD 1.x (768) nor SD 2.x (1024)"), "\($0)")
        }
    }

    func testAnotherVAEReplacesTheModelsOwn() throws {
        let model = try StableDiffusionModel(folder: Fixtures.model("tiny-pano"))
        var generator = TorchGenerator(seed: 5)
        let latents = generator.randn([1, 4, 16, 16])
        let reference = model.vae.decode(latents)

        // The same weights, once in the original names (a standalone VAE file), once as a VAE folder.
        let file = Self.checkpoint("tiny-pano-vae")
        XCTAssertEqual(try model.replacingVAE(with: file).vae.decode(latents).data, reference.data)
        XCTAssertEqual(try model.replacingVAE(with: Fixtures.model("tiny-pano").appendingPathComponent("vae"))
            .vae.decode(latents).data, reference.data)

        // Other weights are really used: a decoder whose last bias is 0.25 higher decodes 0.25 higher.
        let stored = try SafeTensorsFile(url: file)
        var tensors = try stored.names.map { (name: $0, tensor: try stored.tensor($0)) }
        let i = tensors.firstIndex { $0.name == "decoder.conv_out.bias" }!
        tensors[i].tensor = Tensor(shape: tensors[i].tensor.shape, data: tensors[i].tensor.data.map { $0 + 0.25 })
        let shifted = FileManager.default.temporaryDirectory.appendingPathComponent("vae-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: shifted) }
        try SafeTensorsWriter.write(tensors, dtype: .f32, to: shifted)
        let decoded = try model.replacingVAE(with: shifted).vae.decode(latents)
        XCTAssertLessThanOrEqual(decoded.maxAbsDifference(Tensor(shape: reference.shape, data: reference.data.map { $0 + 0.25 })), 1e-5)

        // A whole checkpoint lends its VAE (under first_stage_model.); one of another architecture
        // is refused with what and where, as is a file that holds no VAE.
        XCTAssertThrowsError(try model.replacingVAE(with: Fixtures.model("tiny-sd1").appendingPathComponent("vae/diffusion_pytorch_model.safetensors"))) {
            XCTAssertTrue("\($0)".contains("vae (diffusion_pytorch_model.safetensors)"), "\($0)")
        }
        XCTAssertThrowsError(try model.replacingVAE(with: Self.checkpoint("tiny-sd1"))) {
            XCTAssertTrue("\($0)".contains("first_stage_model.decoder.conv_in.weight"), "\($0)")
        }
        XCTAssertThrowsError(try model.replacingVAE(with: Fixtures.model("tiny-pano").appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))) {
            XCTAssertTrue("\($0)".contains("is not a VAE"), "\($0)")
        }
    }
}
