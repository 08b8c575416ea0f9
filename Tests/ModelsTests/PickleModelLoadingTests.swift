import Foundation
import Models
import Tensors
import Weights
import XCTest

/// Models load from PyTorch files (tools/reference/make_pickle_fixtures.py re-saved the tiny
/// models with torch.save) exactly as from their safetensors twins: the same stored bytes, and
/// the same outputs bit for bit.
final class PickleModelLoadingTests: XCTestCase {
    static func pickle(_ name: String) -> URL { Fixtures.root.appendingPathComponent("pickle/\(name)") }

    func testCheckpointFromCkptIsTheSafetensorsCheckpoint() throws {
        let ckpt = Self.pickle("tiny-sd1.ckpt")
        let twin = SingleFileLoadingTests.checkpoint("tiny-sd1")
        // Every tensor under state_dict. is the safetensors file's, byte for byte.
        let a = try SafeTensorsFile.open(ckpt), b = try SafeTensorsFile.open(twin)
        let stateDict = a.names.filter { $0.hasPrefix("state_dict.") }
        XCTAssertEqual(stateDict.map { String($0.dropFirst("state_dict.".count)) }, b.names)
        for name in b.names {
            let x = try a.withRawBytes(of: "state_dict." + name) { Array($0) }
            let y = try b.withRawBytes(of: name) { Array($0) }
            XCTAssertEqual(x, y, name)
            XCTAssertEqual(a.info("state_dict." + name)?.dtype, b.info(name)?.dtype, name)
        }

        // The renamed components see the same names.
        let single = try SingleFileCheckpoint(url: ckpt), reference = try SingleFileCheckpoint(url: twin)
        XCTAssertEqual(single.textEncoderLayout, .clip)
        for (x, y) in [(single.unet, reference.unet), (single.vae, reference.vae), (single.textEncoder, reference.textEncoder)] {
            XCTAssertEqual(x.names, y.names)
            XCTAssertFalse(x.names.isEmpty)
        }

        // And the models compute the same, exactly.
        let folder = Fixtures.model("tiny-sd1")
        let fromCkpt = try StableDiffusionModel(checkpoint: ckpt, configuration: .folder(folder))
        let fromSafetensors = try StableDiffusionModel(checkpoint: twin, configuration: .folder(folder))
        try assertSameOutputs(fromCkpt, fromSafetensors, prompts: ["a lighthouse on a cliff", ""], seed: 11,
                              latentSize: 16, timestep: 901)
    }

    func testStandardConfigurationsReadTheCkptsShapes() throws {
        // The shapes behind state_dict. reach the family detection: tiny widths are neither family.
        XCTAssertThrowsError(try StableDiffusionModel.tokenizer(
            checkpoint: Self.pickle("tiny-sd1.ckpt"),
            configuration: .standard(tokenizer: Fixtures.model("tiny-sd1").appendingPathComponent("tokenizer"), predictionType: nil))) {
            XCTAssertTrue("\($0)".contains("neither SD 1.x (768) nor SD 2.x (1024)"), "\($0)")
        }
    }

    func testDiffusersFolderWithBinWeights() throws {
        // tiny-sd2's configs and tokenizer, its weights as diffusers_pytorch_model.bin / pytorch_model.bin.
        let source = Fixtures.model("tiny-sd2")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("PickleModel-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.copyItem(at: source, to: folder)
        for component in ["unet", "vae", "text_encoder"] {
            let dir = folder.appendingPathComponent(component)
            for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where name.hasSuffix(".safetensors") {
                try FileManager.default.removeItem(at: dir.appendingPathComponent(name))
            }
            let bin = component == "text_encoder" ? "pytorch_model.bin" : "diffusion_pytorch_model.bin"
            try FileManager.default.copyItem(at: Self.pickle("tiny-sd2-bin/\(component)/\(bin)"), to: dir.appendingPathComponent(bin))
        }
        let fromBin = try StableDiffusionModel(folder: folder)
        let reference = try StableDiffusionModel(folder: source)
        XCTAssertEqual(try DiffusersFolder(url: folder).weights(for: "unet").files.first?.format, .pytorch)
        try assertSameOutputs(fromBin, reference, prompts: ["snowy peaks", ""], seed: 12, latentSize: 32, timestep: 11)
    }

    func testVAEFromPtFile() throws {
        // {'state_dict': {encoder..., decoder...}}, as SD VAE .pt files come.
        let model = try StableDiffusionModel(folder: Fixtures.model("tiny-pano"))
        var generator = TorchGenerator(seed: 13)
        let latents = generator.randn([1, 4, 16, 16])
        let fromPt = try model.replacingVAE(with: Self.pickle("tiny-pano-vae.pt")).vae.decode(latents)
        let fromSafetensors = try model.replacingVAE(with: SingleFileLoadingTests.checkpoint("tiny-pano-vae")).vae.decode(latents)
        XCTAssertEqual(fromPt.data, fromSafetensors.data)
        XCTAssertEqual(fromPt.data, model.vae.decode(latents).data, "the same weights as the model's own VAE")
    }
}
