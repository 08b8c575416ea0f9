import Foundation
import Models
import Tensors
import Weights
import XCTest

/// Inpainting UNets (in_channels 2·C + 1: latents, mask, masked-image latents) load from diffusers
/// folders and single-file checkpoints; other channel counts are refused with the reason.
final class InpaintingModelTests: XCTestCase {
    func testInpaintingFolderLoads() throws {
        let model = try StableDiffusionModel(folder: Fixtures.model("tiny-inpaint"))
        XCTAssertTrue(model.isInpainting)
        XCTAssertEqual(model.unet.config.inChannels, 9)
        XCTAssertEqual(model.latentChannels, 4)
        XCTAssertFalse(try StableDiffusionModel(folder: Fixtures.model("tiny-pano")).isInpainting)
    }

    /// tiny-sd1's single file with its first convolution widened to `channels` inputs, and a copy of
    /// the tiny-sd1 folder whose UNet config says so (the configuration a single file loads with).
    private func widenedSD1(channels: Int) throws -> (file: URL, folder: URL) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("inpaint-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.appendingPathComponent("tiny-sd1-\(channels)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("unet"), withIntermediateDirectories: true)
        let source = Fixtures.model("tiny-sd1")
        for part in ["model_index.json", "text_encoder", "tokenizer", "vae", "scheduler"] {
            try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent(part),
                                                       withDestinationURL: source.appendingPathComponent(part))
        }
        let configData = try Data(contentsOf: source.appendingPathComponent("unet/config.json"))
        var config = try JSONSerialization.jsonObject(with: configData) as! [String: Any]
        config["in_channels"] = channels
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("unet/config.json"))

        let original = try SafeTensorsFile(url: Fixtures.root.appendingPathComponent("models/single-file/tiny-sd1.safetensors"))
        let convIn = "model.diffusion_model.input_blocks.0.0.weight"
        var tensors: [(name: String, tensor: Tensor)] = []
        for name in original.names {
            var t = try original.tensor(name)
            if name == convIn {
                // [out, 4, 3, 3] → [out, channels, 3, 3]: the extra input channels get small values
                let (out, inputs) = (t.shape[0], t.shape[1])
                var data = [Float]()
                for o in 0..<out {
                    data += t.data[(o * inputs * 9)..<((o + 1) * inputs * 9)]
                    data += (0..<((channels - inputs) * 9)).map { Float(($0 * 37 + o) % 17) / 170 - 0.05 }
                }
                t = Tensor(shape: [out, channels, 3, 3], data: data)
            }
            tensors.append((name, t))
        }
        let file = dir.appendingPathComponent("tiny-sd1-\(channels).safetensors")
        try SafeTensorsWriter.write(tensors, dtype: .f16, to: file)
        return (file, folder)
    }

    func testNineChannelSingleFileLoadsAndRuns() throws {
        let (file, folder) = try widenedSD1(channels: 9)
        let model = try StableDiffusionModel(checkpoint: file, configuration: .folder(folder))
        XCTAssertTrue(model.isInpainting)
        var g = TorchGenerator(seed: 1)
        let context = try model.encode(["a lake"])
        let eps = model.unet(g.randn([1, 9, 16, 16]), timestep: 500, encoderHiddenStates: context)
        XCTAssertEqual(eps.shape, [1, 4, 16, 16])
        XCTAssertTrue(eps.data.allSatisfy(\.isFinite))
    }

    func testOtherChannelCountsAreRefused() throws {
        let (file, folder) = try widenedSD1(channels: 6)
        XCTAssertThrowsError(try StableDiffusionModel(checkpoint: file, configuration: .folder(folder))) {
            XCTAssertTrue("\($0)".contains("in_channels 6"), "\($0)")
        }
    }
}
