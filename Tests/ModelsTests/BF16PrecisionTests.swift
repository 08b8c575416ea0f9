import Foundation
import Models
import Tensors
import Weights
import XCTest

/// `Compute.precision = .bf16` against diffusers' float32 outputs on the tiny reference models.
/// bf16 keeps 8 significant bits, so each product operand is off by up to 2⁻⁹ relative; the
/// documented bound for a whole component is max|a − b| ≤ 3 % of max|b|, against 1e-4 for fp32.
/// Measured: text encoders 0.4–0.7 %, UNets 0.7–0.8 %, VAE decode 0.4–0.7 %, encode 1.0–1.2 %.
final class BF16PrecisionTests: XCTestCase {
    /// The bound each component must meet at bf16.
    static let bound: Float = 0.03

    override func setUpWithError() throws {
        try XCTSkipUnless(Compute.hasFastBF16, "no AVX512-BF16 (the portable bf16 kernel is too slow for model tests)")
        Compute.precision = .bf16
    }

    override func tearDown() { Compute.precision = .fp32 }

    private func ratio(_ a: Tensor, _ b: Tensor) -> Float { a.maxAbsDifference(b) / b.maxAbs }

    /// A model built at bf16 keeps its weights packed (half the memory) and computes exactly what
    /// a model built at fp32 with float32 weights computes when run at bf16 (packing its weights
    /// on every call). Built at fp32 on the own float32 GEMM, linear weights would be packed as
    /// float32 and compute in float32 whatever the precision, so that GEMM is off for the build.
    func testPackedWeightsChangeNothing() throws {
        Compute.precision = .fp32
        let savedOwn = Compute.ownFloat32GEMM
        Compute.ownFloat32GEMM = false
        let unpacked = try StableDiffusionModel(folder: Fixtures.model("tiny-sd1"))
        Compute.ownFloat32GEMM = savedOwn
        Compute.precision = .bf16
        let packed = try StableDiffusionModel(folder: Fixtures.model("tiny-sd1"))
        let unet = try Fixtures.golden("tiny-sd1", "unet.safetensors")
        let (x, context) = (try unet.tensor("latent_model_input"), try unet.tensor("encoder_hidden_states"))
        XCTAssertEqual(packed.unet(x, timestep: 999, encoderHiddenStates: context),
                       unpacked.unet(x, timestep: 999, encoderHiddenStates: context))
        let latent = try Fixtures.golden("tiny-sd1", "vae.safetensors").tensor("latent")
        XCTAssertEqual(packed.vae.decode(latent), unpacked.vae.decode(latent))
        let tokens = Array(try Fixtures.golden("tiny-sd1", "text_encoder.safetensors").integers("input_ids")[0..<77])
        XCTAssertEqual(try packed.textEncoder([tokens]), try unpacked.textEncoder([tokens]))
    }

    func testComponentsStayWithinTheBound() throws {
        for name in ["tiny-sd1", "tiny-sd2"] {
            let model = try StableDiffusionModel(folder: Fixtures.model(name))
            let text = try Fixtures.golden(name, "text_encoder.safetensors")
            let flat = try text.integers("input_ids")
            let tokens = stride(from: 0, to: flat.count, by: 77).map { Array(flat[$0..<($0 + 77)]) }
            let unet = try Fixtures.golden(name, "unet.safetensors")
            let vae = try Fixtures.golden(name, "vae.safetensors")
            let eps = model.unet(try unet.tensor("latent_model_input"), timestep: 999,
                                 encoderHiddenStates: try unet.tensor("encoder_hidden_states"))
            let decoded = model.vae.decode(try vae.tensor("latent") / model.vae.scalingFactor)
            let (mean, _) = try model.vae.encode(try vae.tensor("image"))
            let errors = [
                ("text encoder", ratio(try model.textEncoder(tokens), try text.tensor("last_hidden_state"))),
                ("UNet", ratio(eps, try unet.tensor("eps_t999"))),
                ("VAE decode", ratio(decoded, try vae.tensor("decoded"))),
                ("VAE encode", ratio(mean, try vae.tensor("encoded_mean"))),
            ]
            for (what, error) in errors {
                print("bf16 \(name) \(what): max|a-b| / max|b| = \(error)")
                XCTAssertLessThanOrEqual(error, Self.bound, "\(name) \(what)")
                XCTAssertGreaterThan(error, 0, "\(name) \(what): bf16 arithmetic did not run")
            }
        }
    }
}
