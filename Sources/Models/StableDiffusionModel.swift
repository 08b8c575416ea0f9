import Foundation
import Tokenization
import Tensors
import Weights

/// A Stable Diffusion 1.x / 2.x model loaded from a diffusers folder: tokenizer, text encoder,
/// UNet, VAE and the scheduler configuration, checked for consistency with one another.
public struct StableDiffusionModel: Sendable {
    public let folder: DiffusersFolder
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    public let schedulerConfig: DDIMSchedulerConfig

    /// A short name for reports and PNG metadata: the folder's name.
    public var name: String { folder.url.lastPathComponent }

    /// The UNet's native latent window (`sample_size`, 64 for SD 1.x / 2.x base models).
    public var latentWindow: Int { unet.config.sampleSize?.first ?? 64 }

    public init(folder url: URL) throws {
        let folder = try DiffusersFolder(url: url)
        self.folder = folder
        tokenizer = try CLIPTokenizer(directory: folder.componentDirectory("tokenizer"))
        textEncoder = try CLIPTextModel(config: folder.config(CLIPTextConfig.self, for: "text_encoder"),
                                        weights: folder.weights(for: "text_encoder"))
        unet = try UNet2DConditionModel(config: folder.config(UNetConfig.self, for: "unet"),
                                        weights: folder.weights(for: "unet"))
        vae = try AutoencoderKL(config: folder.config(AutoencoderKLConfig.self, for: "vae"),
                                weights: folder.weights(for: "vae"))
        schedulerConfig = try folder.config(DDIMSchedulerConfig.self, for: "scheduler")

        let crossDim = unet.config.crossAttentionDim.first ?? 0
        guard crossDim == textEncoder.config.hiddenSize else {
            throw ModelError.invalidConfig(component: "unet",
                "cross_attention_dim \(crossDim) does not match the text encoder's hidden_size \(textEncoder.config.hiddenSize)")
        }
        guard unet.config.inChannels == vae.config.latentChannels else {
            throw ModelError.invalidConfig(component: "unet",
                "in_channels \(unet.config.inChannels) does not match the VAE's latent_channels \(vae.config.latentChannels)")
        }
    }

    /// Text embeddings [prompts, 77, hidden] for `prompts`, tokenized as the SD pipelines do.
    public func encode(_ prompts: [String], clipSkip: Int = 0) throws -> Tensor {
        try textEncoder(prompts.map { tokenizer($0).ids }, clipSkip: clipSkip)
    }
}
