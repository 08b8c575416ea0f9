import Foundation
import Weights
import XCTest

/// The original-layout (LDM) names of full-size SD 1.5 and SD 2.1 single files, mapped to diffusers'
/// names and configurations. The listings (names and shapes, no weights) come from
/// tools/reference/make_single_file_fixtures.py, checked there against diffusers' own converters.
final class SingleFileCheckpointTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let listings = repository.appendingPathComponent("Tests/Fixtures/models/single-file")
    static let sd15 = repository.appendingPathComponent("benchmarks/sd15")

    /// Stored name → shape of a listing.
    func listing(_ name: String) throws -> [String: [Int]] {
        let data = try Data(contentsOf: Self.listings.appendingPathComponent("\(name)-ldm-shapes.json"))
        let entries = try JSONSerialization.jsonObject(with: data) as! [[Any]]
        return Dictionary(uniqueKeysWithValues: entries.map { ($0[0] as! String, $0[1] as! [Int]) })
    }

    /// Shapes under diffusers' names, as the mapped sets give them.
    func mapped(_ shapes: [String: [Int]], _ names: [String: WeightSet.StoredTensor]) -> [String: [Int]] {
        names.mapValues { s in
            let stored = shapes[s.name]!
            return s.rows.map { [$0.count] + stored.dropFirst() } ?? stored
        }
    }

    typealias Components = (unet: [String: [Int]], vae: [String: [Int]], text: [String: [Int]],
                            layout: SingleFileCheckpoint.TextEncoderLayout)

    func components(_ name: String) throws -> Components {
        let shapes = try listing(name)
        let names = try SingleFileCheckpoint.componentNames(shapes, path: name)
        return (mapped(shapes, names.unet), mapped(shapes, names.vae), mapped(shapes, names.text), names.textLayout)
    }

    /// diffusers' own listing of SD 1.5 (benchmarks/sd15/parameters.json): name → shape per component.
    func diffusersSD15() throws -> [String: [String: [Int]]] {
        let data = try Data(contentsOf: Self.sd15.appendingPathComponent("parameters.json"))
        let object = try JSONSerialization.jsonObject(with: data) as! [String: [[Any]]]
        return object.mapValues { entries in
            Dictionary(uniqueKeysWithValues: entries.map { ($0[0] as! String, $0[1] as! [Int]) })
        }
    }

    func testSD15NamesAreExactlyDiffusersNames() throws {
        let c = try components("sd15")
        let expected = try diffusersSD15()
        XCTAssertEqual(c.layout, .clip)
        XCTAssertEqual(c.unet, expected["unet"]!, "every UNet tensor, named and shaped as diffusers does")
        // The mid-block attention stays a 1x1 convolution; Linear accepts [C, C, 1, 1] for [C, C].
        let vae = Dictionary(uniqueKeysWithValues: c.vae.map { name, shape in
            (name, name.contains(".attentions.") && shape.count == 4 ? Array(shape.prefix(2)) : shape)
        })
        XCTAssertEqual(vae, expected["vae"]!)
        XCTAssertEqual(c.vae["decoder.mid_block.attentions.0.to_q.weight"], [512, 512, 1, 1])
        let text = Dictionary(uniqueKeysWithValues: c.text.map { ($0.key.replacingOccurrences(of: "text_model.", with: ""), $0.value) })
        let expectedText = expected["text_encoder"]!.filter { !$0.key.hasSuffix("position_ids") }
        XCTAssertEqual(text, Dictionary(uniqueKeysWithValues: expectedText.map { ($0.key.replacingOccurrences(of: "text_model.", with: ""), $0.value) }))
    }

    func testSD15ConfigurationsEqualThePublishedOnes() throws {
        let c = try components("sd15")
        let configs = try SingleFileCheckpoint.standardConfigurations(
            unet: c.unet, vae: c.vae, textEncoder: c.text, textEncoderLayout: c.layout, predictionType: nil, path: "sd15")
        XCTAssertEqual(configs.family, .sd1)
        XCTAssertEqual(configs.unet, try UNetConfig.load(from: Self.sd15.appendingPathComponent("unet/config.json")))
        XCTAssertEqual(configs.vae, try AutoencoderKLConfig.load(from: Self.sd15.appendingPathComponent("vae/config.json")))
        XCTAssertEqual(configs.textEncoder, try CLIPTextConfig.load(from: Self.sd15.appendingPathComponent("text_encoder/config.json")))
        XCTAssertEqual(configs.scheduler, try DDIMSchedulerConfig.load(from: Self.sd15.appendingPathComponent("scheduler/scheduler_config.json")))
    }

    /// SD 1.5 inpainting checkpoints differ from SD 1.5 only in the first convolution's 9 inputs
    /// (latents, mask, masked-image latents); `in_channels` is read from it.
    func testSD15InpaintingConfigurationReadsNineInputChannels() throws {
        var shapes = try listing("sd15")
        shapes["model.diffusion_model.input_blocks.0.0.weight"] = [320, 9, 3, 3]
        let names = try SingleFileCheckpoint.componentNames(shapes, path: "sd15-inpainting")
        let configs = try SingleFileCheckpoint.standardConfigurations(
            unet: mapped(shapes, names.unet), vae: mapped(shapes, names.vae), textEncoder: mapped(shapes, names.text),
            textEncoderLayout: names.textLayout, predictionType: nil, path: "sd15-inpainting")
        var expected = try UNetConfig.load(from: Self.sd15.appendingPathComponent("unet/config.json"))
        expected.inChannels = 9
        XCTAssertEqual(configs.unet, expected)
        XCTAssertEqual(configs.family, .sd1)
    }

    func testSD21OpenCLIPAndConfigurations() throws {
        let shapes = try listing("sd21")
        let names = try SingleFileCheckpoint.componentNames(shapes, path: "sd21")
        XCTAssertEqual(names.textLayout, .openCLIP)
        let p = "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight"
        XCTAssertEqual(names.text["text_model.encoder.layers.5.self_attn.q_proj.weight"], .init(p, rows: 0..<1024))
        XCTAssertEqual(names.text["text_model.encoder.layers.5.self_attn.k_proj.weight"], .init(p, rows: 1024..<2048))
        XCTAssertEqual(names.text["text_model.encoder.layers.5.self_attn.v_proj.bias"],
                       .init("cond_stage_model.model.transformer.resblocks.5.attn.in_proj_bias", rows: 2048..<3072))
        XCTAssertEqual(names.text["text_model.encoder.layers.5.mlp.fc2.weight"],
                       .init("cond_stage_model.model.transformer.resblocks.5.mlp.c_proj.weight"))

        let c = try components("sd21")
        XCTAssertEqual(c.text["text_model.encoder.layers.0.self_attn.q_proj.weight"], [1024, 1024])
        let v = try SingleFileCheckpoint.standardConfigurations(
            unet: c.unet, vae: c.vae, textEncoder: c.text, textEncoderLayout: c.layout, predictionType: nil, path: "sd21")
        XCTAssertEqual(v.family, .sd2)
        XCTAssertEqual(v.unet.attentionHeadDim, .many([5, 10, 20, 20]))
        XCTAssertEqual(v.unet.crossAttentionDim, .one(1024))
        XCTAssertTrue(v.unet.useLinearProjection)
        XCTAssertEqual(v.unet.sampleSize, .one(96))
        XCTAssertEqual(v.scheduler.predictionType, "v_prediction")
        // 24 OpenCLIP layers stored; SD 2.x conditions on the penultimate one, so the model keeps 23.
        XCTAssertEqual(v.textEncoder.numHiddenLayers, 23)
        XCTAssertEqual(v.textEncoder.numAttentionHeads, 16)
        XCTAssertEqual(v.textEncoder.hiddenAct, "gelu")
        XCTAssertEqual(v.textEncoder.intermediateSize, 4096)
        XCTAssertEqual(v.family.padToken, "!")

        let base = try SingleFileCheckpoint.standardConfigurations(
            unet: c.unet, vae: c.vae, textEncoder: c.text, textEncoderLayout: c.layout, predictionType: "epsilon", path: "sd21")
        XCTAssertEqual(base.scheduler.predictionType, "epsilon")
        XCTAssertEqual(base.unet.sampleSize, .one(64), "2.x base models are 512-pixel models")
    }

    func testUnsupportedCheckpointsSayWhy() throws {
        var sdxl = try listing("sd15")
        sdxl["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] = [49408, 768]
        XCTAssertThrowsError(try SingleFileCheckpoint.componentNames(sdxl, path: "x.safetensors")) {
            XCTAssertTrue("\($0)".contains("SDXL"), "\($0)")
        }
        XCTAssertThrowsError(try SingleFileCheckpoint.componentNames(["conv_in.weight": [320, 4, 3, 3]], path: "unet.safetensors")) {
            XCTAssertTrue("\($0)".contains("lone diffusers UNet file"), "\($0)")
        }
        let noVAE = try listing("sd15").filter { !$0.key.hasPrefix("first_stage_model.") }
        XCTAssertThrowsError(try SingleFileCheckpoint.componentNames(noVAE, path: "x.safetensors")) {
            XCTAssertTrue("\($0)".contains("has no VAE"), "\($0)")
        }
        var c = try components("sd15")
        for key in c.unet.keys where key.hasSuffix("attn2.to_k.weight") { c.unet[key] = [320, 2048] }
        XCTAssertThrowsError(try SingleFileCheckpoint.standardConfigurations(
            unet: c.unet, vae: c.vae, textEncoder: c.text, textEncoderLayout: c.layout, predictionType: nil, path: "x")) {
            XCTAssertTrue("\($0)".contains("2048-wide cross-attention"), "\($0)")
        }
    }
}
