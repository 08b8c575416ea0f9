import Foundation
import Models
import Weights
import XCTest

/// Bad model folders fail with a message that names the problem and its place.
final class LoadingErrorTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    /// A copy of a fixture model that the test may damage.
    private func copyOfModel(_ name: String) throws -> URL {
        let copy = scratch.appendingPathComponent(name)
        try FileManager.default.copyItem(at: Fixtures.model(name), to: copy)
        return copy
    }

    private func assertLoadFails(_ url: URL, mentioning parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try StableDiffusionModel(folder: url), file: file, line: line) { error in
            let message = "\(error)"
            for part in parts {
                XCTAssertTrue(message.contains(part), "“\(message)” does not mention “\(part)”", file: file, line: line)
            }
        }
    }

    func testMissingComponentFolder() throws {
        let model = try copyOfModel("tiny-sd1")
        try FileManager.default.removeItem(at: model.appendingPathComponent("vae"))
        assertLoadFails(model, mentioning: ["vae"])
    }

    func testNotAModelFolder() throws {
        assertLoadFails(scratch.appendingPathComponent("nowhere"), mentioning: ["model_index.json"])
    }

    func testConfigThatDisagreesWithTheWeights() throws {
        let model = try copyOfModel("tiny-sd1")
        let configURL = model.appendingPathComponent("unet/config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["block_out_channels"] = [32, 64, 64]
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        assertLoadFails(model, mentioning: ["unet", "shape", "config"])
    }

    func testTruncatedWeights() throws {
        let model = try copyOfModel("tiny-sd1")
        let weights = model.appendingPathComponent("vae/diffusion_pytorch_model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count / 2).write(to: weights)
        assertLoadFails(model, mentioning: ["diffusion_pytorch_model.safetensors"])
    }

    func testMismatchedTextEncoderWidth() throws {
        let model = try copyOfModel("tiny-sd1")
        let configURL = model.appendingPathComponent("unet/config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["cross_attention_dim"] = 64
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        assertLoadFails(model, mentioning: ["attn2.to_k.weight", "shape"])
    }
}
