import Foundation
import Tokenization
import Tensors
import Weights

/// A Stable Diffusion 1.x / 2.x model: tokenizer, text encoder, UNet, VAE and the scheduler
/// configuration, checked for consistency with one another. Loaded from a diffusers folder or from
/// a single-file checkpoint.
public struct StableDiffusionModel: Sendable {
    /// The folder or file the weights came from.
    public let source: URL
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    public let schedulerConfig: DDIMSchedulerConfig
    /// The LoRAs merged into the UNet's and text encoder's weights, in order.
    public let loras: [AppliedLoRA]

    /// A short name for reports and PNG metadata: the folder's name, or the file's without extension.
    public let name: String

    /// Whether the UNet is an inpainting UNet (SD 1.5 / 2.x inpainting): its input is the latents,
    /// the mask (1 channel) and the masked image's latents, 2·C + 1 channels.
    public var isInpainting: Bool { unet.config.inChannels == 2 * latentChannels + 1 }

    /// Channels of the latent canvas (the VAE's `latent_channels`, 4 for SD).
    public var latentChannels: Int { vae.config.latentChannels }

    /// The UNet's native latent window (`sample_size`, 64 for SD 1.x / 2.x base models).
    public var latentWindow: Int { unet.config.sampleSize?.first ?? 64 }

    /// Where a single-file checkpoint's configuration comes from.
    public enum CheckpointConfiguration: Sendable {
        /// The configs, tokenizer and scheduler of a diffusers folder of the same architecture
        /// (diffusers' `from_single_file(config:)`); its weights are not read.
        case folder(URL)
        /// SD 1.x / 2.x configs read off the checkpoint's shapes, with the CLIP tokenizer files in
        /// `tokenizer` (vocab.json, merges.txt). `predictionType` nil: the family's default.
        case standard(tokenizer: URL, predictionType: String?)
    }

    /// Loads a diffusers folder (`model_index.json`, unet/, vae/, text_encoder/, tokenizer/, scheduler/),
    /// with `loras` merged into the UNet's and text encoder's weights as they load.
    public init(folder url: URL, loras: [LoRAApplication] = []) throws {
        let folder = try DiffusersFolder(url: url)
        let weights = try LoRAMerge.apply(loras, unet: folder.weights(for: "unet"),
                                          textEncoder: folder.weights(for: "text_encoder"))
        try self.init(
            source: folder.url, name: folder.url.lastPathComponent,
            tokenizer: CLIPTokenizer(directory: folder.componentDirectory("tokenizer")),
            textEncoder: CLIPTextModel(config: folder.config(CLIPTextConfig.self, for: "text_encoder"),
                                       weights: weights.textEncoder),
            unet: UNet2DConditionModel(config: folder.config(UNetConfig.self, for: "unet"),
                                       weights: weights.unet),
            vae: AutoencoderKL(config: folder.config(AutoencoderKLConfig.self, for: "vae"),
                               weights: folder.weights(for: "vae")),
            schedulerConfig: folder.config(DDIMSchedulerConfig.self, for: "scheduler"), loras: loras.map(\.applied))
    }

    /// Loads a single-file checkpoint in the original layout (`SingleFileCheckpoint`), with `loras`
    /// merged into the UNet's and text encoder's weights as they load.
    public init(checkpoint url: URL, configuration: CheckpointConfiguration, loras: [LoRAApplication] = []) throws {
        let checkpoint = try SingleFileCheckpoint(url: url)
        let (tokenizer, configs) = try Self.resolve(checkpoint, configuration)
        let weights = try LoRAMerge.apply(loras, unet: checkpoint.unet, textEncoder: checkpoint.textEncoder)
        try self.init(
            source: url, name: url.deletingPathExtension().lastPathComponent, tokenizer: tokenizer,
            textEncoder: CLIPTextModel(config: configs.textEncoder, weights: weights.textEncoder),
            unet: UNet2DConditionModel(config: configs.unet, weights: weights.unet),
            vae: AutoencoderKL(config: configs.vae, weights: checkpoint.vae),
            schedulerConfig: configs.scheduler, loras: loras.map(\.applied))
    }

    /// The tokenizer a single-file checkpoint loads with (for SD 2.x it pads with `!`), without
    /// building the model: only the file's header is read.
    public static func tokenizer(checkpoint url: URL, configuration: CheckpointConfiguration) throws -> CLIPTokenizer {
        try resolve(SingleFileCheckpoint(url: url), configuration).tokenizer
    }

    private typealias Configs = (unet: UNetConfig, vae: AutoencoderKLConfig, textEncoder: CLIPTextConfig,
                                 scheduler: DDIMSchedulerConfig)

    /// The tokenizer and component configurations `configuration` gives `checkpoint`.
    private static func resolve(_ checkpoint: SingleFileCheckpoint, _ configuration: CheckpointConfiguration) throws
        -> (tokenizer: CLIPTokenizer, configs: Configs) {
        switch configuration {
        case let .folder(folderURL):
            let folder = try DiffusersFolder(url: folderURL)
            return try (CLIPTokenizer(directory: folder.componentDirectory("tokenizer")),
                        (folder.config(UNetConfig.self, for: "unet"), folder.config(AutoencoderKLConfig.self, for: "vae"),
                         folder.config(CLIPTextConfig.self, for: "text_encoder"),
                         folder.config(DDIMSchedulerConfig.self, for: "scheduler")))
        case let .standard(tokenizerURL, predictionType):
            let standard = try checkpoint.standardConfigurations(predictionType: predictionType)
            let tokenizer = try CLIPTokenizer(vocabulary: tokenizerURL.appendingPathComponent("vocab.json"),
                                              merges: tokenizerURL.appendingPathComponent("merges.txt"),
                                              padToken: standard.family.padToken)
            return (tokenizer, (standard.unet, standard.vae, standard.textEncoder, standard.scheduler))
        }
    }

    /// This model with another VAE of the same architecture: a diffusers VAE folder (its
    /// config.json and weights) or a single `.safetensors` file (`SingleFileCheckpoint.standaloneVAE`,
    /// read with this model's VAE configuration).
    public func replacingVAE(with url: URL) throws -> StableDiffusionModel {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        let vae = isDirectory.boolValue
            ? try AutoencoderKL(config: AutoencoderKLConfig.load(from: url.appendingPathComponent("config.json")),
                                weights: DiffusersFolder.weights(in: url, label: "vae (\(url.lastPathComponent))"))
            : try AutoencoderKL(config: self.vae.config, weights: SingleFileCheckpoint.standaloneVAE(url: url))
        return try StableDiffusionModel(source: source, name: name, tokenizer: tokenizer, textEncoder: textEncoder, unet: unet,
                                        vae: vae, schedulerConfig: schedulerConfig, loras: loras)
    }

    private init(source: URL, name: String, tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel,
                 unet: UNet2DConditionModel, vae: AutoencoderKL, schedulerConfig: DDIMSchedulerConfig,
                 loras: [AppliedLoRA]) throws {
        self.source = source
        self.name = name
        self.tokenizer = tokenizer
        self.textEncoder = textEncoder
        self.unet = unet
        self.vae = vae
        self.schedulerConfig = schedulerConfig
        self.loras = loras

        let crossDim = unet.config.crossAttentionDim.first ?? 0
        guard crossDim == textEncoder.config.hiddenSize else {
            throw ModelError.invalidConfig(component: "unet",
                "cross_attention_dim \(crossDim) does not match the text encoder's hidden_size \(textEncoder.config.hiddenSize)")
        }
        let latents = vae.config.latentChannels
        guard unet.config.inChannels == latents || unet.config.inChannels == 2 * latents + 1 else {
            throw ModelError.invalidConfig(component: "unet",
                "in_channels \(unet.config.inChannels) does not match the VAE's latent_channels \(latents) "
                + "(nor \(2 * latents + 1), an inpainting UNet's latents, mask and masked-image latents)")
        }
        guard unet.config.outChannels == latents else {
            throw ModelError.invalidConfig(component: "unet",
                "out_channels \(unet.config.outChannels) does not match the VAE's latent_channels \(latents)")
        }
    }

    /// Text embeddings [prompts, 77, hidden] for `prompts`, tokenized as the SD pipelines do.
    public func encode(_ prompts: [String], clipSkip: Int = 0) throws -> Tensor {
        try textEncoder(prompts.map { tokenizer($0).ids }, clipSkip: clipSkip)
    }
}
