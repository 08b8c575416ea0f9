import Foundation

extension SingleFileCheckpoint {
    /// The Stable Diffusion generation a checkpoint belongs to, read off its cross-attention width.
    public enum Family: String, Sendable {
        /// CLIP ViT-L/14 text encoder, 768-wide cross-attention.
        case sd1 = "SD 1.x"
        /// OpenCLIP ViT-H/14 text encoder, 1024-wide cross-attention, 64-wide attention heads.
        case sd2 = "SD 2.x"

        /// The tokenizer's padding token (SD 2.x's tokenizer pads with "!").
        public var padToken: String { self == .sd1 ? "<|endoftext|>" : "!" }

        /// The prediction type diffusers assumes for a single file of this family: SD 2.x files are
        /// taken for the 768-pixel v-prediction models; 2.x base models need `epsilon` said.
        public var defaultPredictionType: String { self == .sd1 ? "epsilon" : "v_prediction" }
    }

    /// Configurations of a checkpoint of the standard SD 1.x / 2.x architectures.
    public struct StandardConfigurations: Sendable, Equatable {
        public var family: Family
        public var unet: UNetConfig
        public var vae: AutoencoderKLConfig
        public var textEncoder: CLIPTextConfig
        public var scheduler: DDIMSchedulerConfig
    }

    /// Configurations built from this checkpoint's tensor shapes, with what shapes cannot tell
    /// (attention heads, activations, the VAE's scaling factor, the noise schedule) taken from the
    /// family's published configs, as diffusers' `from_single_file` does.
    /// - Parameter predictionType: `epsilon` or `v_prediction`; nil takes the family's default.
    public func standardConfigurations(predictionType: String? = nil) throws -> StandardConfigurations {
        func shapes(_ set: WeightSet) -> [String: [Int]] {
            Dictionary(uniqueKeysWithValues: set.names.map { ($0, set.shape(of: $0) ?? []) })
        }
        return try Self.standardConfigurations(unet: shapes(unet), vae: shapes(vae), textEncoder: shapes(textEncoder),
                                               textEncoderLayout: textEncoderLayout, predictionType: predictionType,
                                               path: url.path)
    }

    /// `standardConfigurations` from shapes under diffusers' names (a test can build them without weights).
    public static func standardConfigurations(
        unet: [String: [Int]], vae: [String: [Int]], textEncoder: [String: [Int]],
        textEncoderLayout: TextEncoderLayout, predictionType: String?, path: String
    ) throws -> StandardConfigurations {
        func shape(_ set: [String: [Int]], _ name: String, _ component: String) throws -> [Int] {
            guard let s = set[name], !s.isEmpty else {
                throw WeightsError.corruptFile(path: path, problem: "has no \(component) tensor that is "
                    + "\"\(name)\" in diffusers' names, so its architecture cannot be read")
            }
            return s
        }
        /// Distinct indices N in names "<prefix>N.…".
        func indices(_ set: [String: [Int]], _ prefix: String) -> [Int] {
            Set(set.keys.compactMap { key in
                key.hasPrefix(prefix) ? Int(key.dropFirst(prefix.count).prefix { $0 != "." }) : nil
            }).sorted()
        }
        func has(_ set: [String: [Int]], _ prefix: String) -> Bool { set.keys.contains { $0.hasPrefix(prefix) } }

        // UNet
        let downBlocks = indices(unet, "down_blocks.")
        guard !downBlocks.isEmpty, downBlocks == Array(0..<downBlocks.count) else {
            throw WeightsError.corruptFile(path: path, problem: "has a UNet without numbered down blocks")
        }
        let blockOut = try downBlocks.map { try shape(unet, "down_blocks.\($0).resnets.0.conv1.weight", "UNet")[0] }
        guard let crossKey = unet.keys.filter({ $0.hasSuffix("attn2.to_k.weight") }).min() else {
            throw WeightsError.corruptFile(path: path, problem: "has a UNet without cross-attention")
        }
        let crossDim = try shape(unet, crossKey, "UNet")[1]
        let family: Family
        switch crossDim {
        case 768: family = .sd1
        case 1024: family = .sd2
        default:
            throw WeightsError.corruptFile(path: path, problem: "has \(crossDim)-wide cross-attention, which is "
                + "neither SD 1.x (768) nor SD 2.x (1024); pass a diffusers folder of its architecture as its configuration")
        }
        let prediction = predictionType ?? family.defaultPredictionType
        guard ["epsilon", "v_prediction"].contains(prediction) else {
            throw WeightsError.invalidConfig(path: path, key: "prediction_type",
                                             problem: "is \"\(prediction)\"; use epsilon or v_prediction")
        }
        let projIn = unet.keys.filter { $0.hasSuffix("proj_in.weight") }.min()
        var u = UNetConfig()
        u.sampleSize = family == .sd2 && prediction == "v_prediction" ? 96 : 64
        u.inChannels = try shape(unet, "conv_in.weight", "UNet")[1]
        u.outChannels = try shape(unet, "conv_out.weight", "UNet")[0]
        u.blockOutChannels = blockOut
        u.layersPerBlock = .one(indices(unet, "down_blocks.0.resnets.").count)
        u.downBlockTypes = downBlocks.map { has(unet, "down_blocks.\($0).attentions.") ? "CrossAttnDownBlock2D" : "DownBlock2D" }
        u.upBlockTypes = indices(unet, "up_blocks.").map {
            has(unet, "up_blocks.\($0).attentions.") ? "CrossAttnUpBlock2D" : "UpBlock2D"
        }
        u.crossAttentionDim = .one(crossDim)
        u.useLinearProjection = try projIn.map { try shape(unet, $0, "UNet").count == 2 } ?? false
        u.attentionHeadDim = family == .sd1 ? .one(8) : .many(blockOut.map { $0 / 64 })
        u.upcastAttention = family == .sd2

        // VAE
        let vaeBlocks = indices(vae, "encoder.down_blocks.")
        var v = AutoencoderKLConfig()
        v.inChannels = try shape(vae, "encoder.conv_in.weight", "VAE")[1]
        v.outChannels = try shape(vae, "decoder.conv_out.weight", "VAE")[0]
        v.blockOutChannels = try vaeBlocks.map { try shape(vae, "encoder.down_blocks.\($0).resnets.0.conv1.weight", "VAE")[0] }
        v.downBlockTypes = vaeBlocks.map { _ in "DownEncoderBlock2D" }
        v.upBlockTypes = vaeBlocks.map { _ in "UpDecoderBlock2D" }
        v.layersPerBlock = indices(vae, "encoder.down_blocks.0.resnets.").count
        v.latentChannels = try shape(vae, "decoder.conv_in.weight", "VAE")[1]
        v.sampleSize = family == .sd1 ? 256 : 768
        v.scalingFactor = 0.18215

        // Text encoder: SD 2.x uses OpenCLIP's penultimate layer, so diffusers keeps one layer fewer.
        let token = try shape(textEncoder, "text_model.embeddings.token_embedding.weight", "text encoder")
        let stored = indices(textEncoder, "text_model.encoder.layers.").count
        var t = CLIPTextConfig()
        t.vocabSize = token[0]
        t.hiddenSize = token[1]
        t.maxPositionEmbeddings = try shape(textEncoder, "text_model.embeddings.position_embedding.weight", "text encoder")[0]
        t.intermediateSize = try shape(textEncoder, "text_model.encoder.layers.0.mlp.fc1.weight", "text encoder")[0]
        t.numAttentionHeads = token[1] / 64
        t.numHiddenLayers = textEncoderLayout == .openCLIP ? stored - 1 : stored
        t.hiddenAct = textEncoderLayout == .openCLIP ? "gelu" : "quick_gelu"
        t.projectionDim = family == .sd1 ? 768 : 512
        (t.bosTokenId, t.eosTokenId, t.padTokenId) = (0, 2, 1)

        var s = DDIMSchedulerConfig.stableDiffusion
        s.predictionType = prediction
        return StandardConfigurations(family: family, unet: u, vae: v, textEncoder: t, scheduler: s)
    }
}
