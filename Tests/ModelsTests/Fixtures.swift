import Foundation
import Models
import Tensors
import Weights
import XCTest

/// Paths of the committed reference fixtures (see tools/reference/).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func model(_ name: String) -> URL { root.appendingPathComponent("models/\(name)") }

    static func golden(_ model: String, _ file: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: root.appendingPathComponent("golden/\(model)/\(file)"))
    }
}

/// max|a − b| ≤ tolerance · max|b|, the parity criterion for float tensors.
func assertParity(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-4, _ what: String,
                  file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, what, file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let diff = actual.maxAbsDifference(expected), scale = expected.maxAbs
    XCTAssertLessThanOrEqual(diff, tolerance * scale,
                             "\(what): max|a-b| = \(diff), max|b| = \(scale), ratio \(diff / max(scale, .leastNonzeroMagnitude))",
                             file: file, line: line)
}

/// Two models compute exactly the same: text embeddings of `prompts`, a UNet call on seeded
/// latents [2, 4, size, size] at `timestep`, and the VAE decode of those latents.
func assertSameOutputs(_ a: StableDiffusionModel, _ b: StableDiffusionModel, prompts: [String], seed: UInt64,
                       latentSize: Int, timestep: Float, file: StaticString = #filePath, line: UInt = #line) throws {
    let e1 = try a.encode(prompts), e2 = try b.encode(prompts)
    XCTAssertEqual(e1.data, e2.data, "text embeddings", file: file, line: line)
    var generator = TorchGenerator(seed: seed)
    let latents = generator.randn([2, 4, latentSize, latentSize])
    XCTAssertEqual(a.unet(latents, timestep: timestep, encoderHiddenStates: e1).data,
                   b.unet(latents, timestep: timestep, encoderHiddenStates: e2).data, "UNet", file: file, line: line)
    XCTAssertEqual(a.vae.decode(latents).data, b.vae.decode(latents).data, "VAE decode", file: file, line: line)
}
