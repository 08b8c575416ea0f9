import Foundation
import Weights
import XCTest

final class ConfigTests: XCTestCase {
    private func decode<C: JSONConfiguration>(_ type: C.Type, _ json: String) throws -> C {
        try C.decode(Data(json.utf8), path: "test/config.json")
    }

    func testUNetUnknownKeysIgnoredAndMissingKeysDefault() throws {
        let config = try decode(UNetConfig.self, #"{"in_channels": 9, "some_future_option": {"x": [1, 2]}, "_diffusers_version": "9.9"}"#)
        var expected = UNetConfig()
        expected.className = nil
        expected.inChannels = 9
        XCTAssertEqual(config, expected)
        // The constructor's defaults (diffusers 0.42), not SD 1.5's file.
        XCTAssertEqual(config.crossAttentionDim, .one(1280))
        XCTAssertEqual(config.blockOutChannels, [320, 640, 1280, 1280])
        XCTAssertEqual(config.midBlockType, "UNetMidBlock2DCrossAttn")
        XCTAssertEqual(config.normNumGroups, 32)
        XCTAssertNil(config.sampleSize)
        XCTAssertEqual(config.headsPerBlock, [8, 8, 8, 8])
        XCTAssertEqual(config.layersPerDownBlock, [2, 2, 2, 2])
    }

    func testUNetAttentionHeadDimIntListAndNumAttentionHeads() throws {
        let asInt = try decode(UNetConfig.self, #"{"attention_head_dim": 8}"#)
        XCTAssertEqual(asInt.attentionHeadDim, .one(8))
        XCTAssertEqual(asInt.headsPerBlock, [8, 8, 8, 8])

        // SD 2.x style.
        let asList = try decode(UNetConfig.self, #"{"attention_head_dim": [5, 10, 20, 20], "use_linear_projection": true, "layers_per_block": [1, 2, 2, 3]}"#)
        XCTAssertEqual(asList.attentionHeadDim, [5, 10, 20, 20])
        XCTAssertEqual(asList.headsPerBlock, [5, 10, 20, 20])
        XCTAssertEqual(asList.layersPerDownBlock, [1, 2, 2, 3])
        XCTAssertTrue(asList.useLinearProjection)

        let explicit = try decode(UNetConfig.self, #"{"attention_head_dim": 64, "num_attention_heads": [2, 4, 8, 8]}"#)
        XCTAssertEqual(explicit.headsPerBlock, [2, 4, 8, 8])
        let nullHeads = try decode(UNetConfig.self, #"{"attention_head_dim": 4, "num_attention_heads": null}"#)
        XCTAssertEqual(nullHeads.headsPerBlock, [4, 4, 4, 4])
    }

    func testUNetNullMeansNoneButAbsentMeansDefault() throws {
        let config = try decode(UNetConfig.self, #"{"mid_block_type": null, "norm_num_groups": null, "sample_size": [96, 64], "only_cross_attention": [true, false, false, false]}"#)
        XCTAssertNil(config.midBlockType)
        XCTAssertNil(config.normNumGroups)
        XCTAssertEqual(config.latentSampleSize?.height, 96)
        XCTAssertEqual(config.latentSampleSize?.width, 64)
        XCTAssertEqual(config.onlyCrossAttentionPerBlock, [true, false, false, false])
        XCTAssertFalse(config.resolvedMidBlockOnlyCrossAttention)
        XCTAssertTrue(try decode(UNetConfig.self, #"{"only_cross_attention": true}"#).resolvedMidBlockOnlyCrossAttention)
    }

    func testWrongTypesNameFileAndKey() {
        assertThrowsMessage(try decode(UNetConfig.self, #"{"in_channels": "four"}"#),
                            contains: ["test/config.json", "key \"in_channels\"", "wrong type", "integer"])
        assertThrowsMessage(try decode(UNetConfig.self, #"{"block_out_channels": [320, "x"]}"#),
                            contains: ["test/config.json", "block_out_channels[1]"])
        assertThrowsMessage(try decode(AutoencoderKLConfig.self, #"{"scaling_factor": "0.18"}"#),
                            contains: ["key \"scaling_factor\"", "number"])
        assertThrowsMessage(try decode(UNetConfig.self, #"{"in_channels": 4,"#),
                            contains: ["test/config.json", "not valid JSON"])
        assertThrowsMessage(try decode(UNetConfig.self, "[1, 2]"), contains: ["test/config.json", "not a JSON object"])
        assertThrowsMessage(try decode(UNetConfig.self, #"{"transformer_layers_per_block": [[1, 2], [3, 4]]}"#),
                            contains: ["transformer_layers_per_block", "nested"])
    }

    func testInconsistentPerBlockListsAreReported() {
        assertThrowsMessage(try decode(UNetConfig.self, #"{"attention_head_dim": [5, 10]}"#),
                            contains: ["test/config.json", "key \"attention_head_dim\"", "2 entries", "4 down blocks"])
        assertThrowsMessage(try decode(UNetConfig.self, #"{"block_out_channels": [32, 64]}"#),
                            contains: ["key \"block_out_channels\""])
        assertThrowsMessage(try decode(CLIPTextConfig.self, #"{"hidden_size": 30, "num_attention_heads": 4}"#),
                            contains: ["num_attention_heads"])
    }

    /// Sizes are bounded before the model allocates from them: a text encoder config claiming
    /// 10⁹ layers once killed the process.
    func testHostileSizesAreRefused() {
        for (key, value) in [("num_hidden_layers", "1000000000"), ("num_hidden_layers", "0"), ("hidden_size", "-64"),
                             ("vocab_size", "9223372036854775807"), ("max_position_embeddings", "0")] {
            assertThrowsMessage(try decode(CLIPTextConfig.self, "{\"\(key)\": \(value)}"), contains: [key, "must be between 1 and"])
        }
    }

    func testLoadMissingFile() {
        let url = URL(fileURLWithPath: "/nonexistent/unet/config.json")
        assertThrowsMessage(try UNetConfig.load(from: url), contains: [url.path, "no such file"])
    }

    func testEncodingRoundTrips() throws {
        let config = UNetConfig(sampleSize: 64, blockOutChannels: [32, 64, 64, 64], attentionHeadDim: [1, 2, 4, 4],
                                numAttentionHeads: nil)
        let data = try JSONEncoder().encode(config)
        XCTAssertEqual(try UNetConfig.decode(data), config)
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.contains("\"attention_head_dim\":[1,2,4,4]"), text)

        for scheduler in [DDIMSchedulerConfig(), DDIMSchedulerConfig.stableDiffusion] {
            XCTAssertEqual(try DDIMSchedulerConfig.decode(JSONEncoder().encode(scheduler)), scheduler)
        }
        let vae = AutoencoderKLConfig(blockOutChannels: [1, 2])
        XCTAssertEqual(try JSONDecoder().decode(AutoencoderKLConfig.self, from: JSONEncoder().encode(vae)), vae)
    }

    func testOtherDefaults() throws {
        let vae = try decode(AutoencoderKLConfig.self, "{}")
        XCTAssertEqual(vae.blockOutChannels, [64])
        XCTAssertEqual(vae.layersPerBlock, 1)
        XCTAssertEqual(vae.scalingFactor, 0.18215)
        XCTAssertNil(vae.shiftFactor)
        XCTAssertTrue(vae.useQuantConv && vae.usePostQuantConv && vae.midBlockAddAttention && vae.forceUpcast)

        let clip = try decode(CLIPTextConfig.self, "{}")
        XCTAssertEqual(clip, CLIPTextConfig())
        XCTAssertEqual(clip.hiddenSize, 512)
        XCTAssertEqual(clip.eosTokenId, 49407)
        XCTAssertEqual(clip.hiddenAct, "quick_gelu")

        let ddim = try decode(DDIMSchedulerConfig.self, "{}")
        XCTAssertNil(ddim.className)
        XCTAssertEqual(ddim.betaSchedule, "linear")
        XCTAssertEqual(ddim.betaStart, 0.0001)
        XCTAssertTrue(ddim.clipSample && ddim.setAlphaToOne)
        XCTAssertEqual(ddim.timestepSpacing, "leading")
    }

    func testCLIPVariants() throws {
        let eosList = try decode(CLIPTextConfig.self, #"{"eos_token_id": [2, 49407], "pad_token_id": null}"#)
        XCTAssertEqual(eosList.eosTokenId, 2)
        XCTAssertNil(eosList.padTokenId)
        let nested = try decode(CLIPTextConfig.self, #"{"model_type": "clip", "text_config": {"hidden_size": 1024, "num_attention_heads": 16, "hidden_act": "gelu"}, "vision_config": {"hidden_size": 1280}}"#)
        XCTAssertEqual(nested.hiddenSize, 1024)
        XCTAssertEqual(nested.headDim, 64)
        XCTAssertEqual(nested.hiddenAct, "gelu")
    }

    func testModelIndex() throws {
        let index = try decode(ModelIndex.self, #"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.10.2", "feature_extractor": [null, null], "requires_safety_checker": null, "unet": ["diffusers", "UNet2DConditionModel"], "image_encoder": [null, null], "force_zeros": false}"#)
        XCTAssertEqual(index.className, "StableDiffusionPipeline")
        XCTAssertEqual(index.diffusersVersion, "0.10.2")
        XCTAssertEqual(index.components["unet"], .init(library: "diffusers", className: "UNet2DConditionModel"))
        XCTAssertEqual(index.components["feature_extractor"]?.isPresent, false)
        XCTAssertNil(index.components["requires_safety_checker"])
        XCTAssertEqual(index.presentComponents, ["unet"])
        XCTAssertEqual(try ModelIndex.decode(JSONEncoder().encode(index)), index)
    }

    // MARK: - Real configuration files

    func testSD15Configs() throws {
        let root = try SharedData.require(SharedData.sd15Layout)
        let unet = try UNetConfig.load(from: root.appendingPathComponent("unet/config.json"))
        XCTAssertEqual(unet.className, "UNet2DConditionModel")
        XCTAssertEqual(unet.blockOutChannels, [320, 640, 1280, 1280])
        XCTAssertEqual(unet.crossAttentionDim, .one(768))
        XCTAssertEqual(unet.headsPerBlock, [8, 8, 8, 8])
        XCTAssertEqual(unet.layersPerDownBlock, [2, 2, 2, 2])
        XCTAssertEqual(unet.downBlockTypes, ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
        XCTAssertEqual(unet.upBlockTypes, ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        XCTAssertEqual(unet.midBlockType, "UNetMidBlock2DCrossAttn", "absent in the 0.10 file: the default")
        XCTAssertEqual(unet.sampleSize, .one(64))
        XCTAssertEqual(unet.normEps, 1e-5)
        XCTAssertTrue(unet.flipSinToCos)
        XCTAssertEqual(unet.freqShift, 0)
        XCTAssertFalse(unet.useLinearProjection)
        XCTAssertEqual(unet.transformerLayersPerDownBlock, [1, 1, 1, 1])

        let vae = try AutoencoderKLConfig.load(from: root.appendingPathComponent("vae/config.json"))
        XCTAssertEqual(vae.blockOutChannels, [128, 256, 512, 512])
        XCTAssertEqual(vae.layersPerBlock, 2)
        XCTAssertEqual(vae.latentChannels, 4)
        XCTAssertEqual(vae.scalingFactor, 0.18215)
        XCTAssertEqual(vae.sampleSize, .one(256))
        XCTAssertEqual(vae.downsamplingFactor, 8)

        let clip = try CLIPTextConfig.load(from: root.appendingPathComponent("text_encoder/config.json"))
        XCTAssertEqual(clip.hiddenSize, 768)
        XCTAssertEqual(clip.numHiddenLayers, 12)
        XCTAssertEqual(clip.numAttentionHeads, 12)
        XCTAssertEqual(clip.intermediateSize, 3072)
        XCTAssertEqual(clip.maxPositionEmbeddings, 77)
        XCTAssertEqual(clip.hiddenAct, "quick_gelu")
        XCTAssertEqual(clip.vocabSize, 49408)
        XCTAssertEqual(clip.projectionDim, 768)
        XCTAssertEqual([clip.padTokenId, clip.bosTokenId, clip.eosTokenId], [1, 0, 2])

        let scheduler = try DDIMSchedulerConfig.load(from: root.appendingPathComponent("scheduler/scheduler_config.json"))
        XCTAssertEqual(scheduler.className, "DDIMScheduler")
        XCTAssertEqual(scheduler.betaStart, 0.00085)
        XCTAssertEqual(scheduler.betaEnd, 0.012)
        XCTAssertEqual(scheduler.betaSchedule, "scaled_linear")
        XCTAssertFalse(scheduler.clipSample)
        XCTAssertFalse(scheduler.setAlphaToOne)
        XCTAssertEqual(scheduler.stepsOffset, 1)
        XCTAssertEqual(scheduler.predictionType, "epsilon")
        XCTAssertNil(scheduler.trainedBetas)
        XCTAssertEqual(scheduler.timestepSpacing, "leading")
        XCTAssertEqual(scheduler, DDIMSchedulerConfig.stableDiffusion)

        let index = try ModelIndex.load(from: root.appendingPathComponent("model_index.json"))
        XCTAssertEqual(index.presentComponents, ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])
    }

    func testTinySDConfigs() throws {
        let folder = try DiffusersFolder(url: SharedData.require(SharedData.tinySD))
        let unet = try folder.config(UNetConfig.self, for: "unet")
        XCTAssertEqual(unet.blockOutChannels, [32, 64])
        XCTAssertEqual(unet.headsPerBlock, [8, 8])
        XCTAssertEqual(unet.crossAttentionDim, .one(32))
        XCTAssertNil(unet.numAttentionHeads)
        let clip = try folder.config(CLIPTextConfig.self, for: "text_encoder")
        XCTAssertEqual([clip.hiddenSize, clip.intermediateSize, clip.numHiddenLayers, clip.vocabSize], [32, 37, 2, 1000])
        XCTAssertEqual(clip.eosTokenId, 999)
        let vae = try folder.config(AutoencoderKLConfig.self, for: "vae")
        XCTAssertEqual(vae.blockOutChannels, [32, 32, 64, 64])
        // save_pretrained names timestep_spacing, SD's own file does not
        var named = DDIMSchedulerConfig.stableDiffusion
        named.timestepSpacingIsExplicit = true
        XCTAssertEqual(try folder.config(DDIMSchedulerConfig.self, for: "scheduler"), named)
    }
}
