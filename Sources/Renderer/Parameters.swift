import Foundation
import Tensors
import Tokenization
import Weights

extension PanoramaPipeline {
    /// The generation parameters of a render in the "parameters" text format of AUTOMATIC1111
    /// (`Infotext`), which ComfyUI and image browsers also read: what the command line and the
    /// server write into every PNG.
    ///
    /// - Parameters:
    ///   - s: the render's settings.
    ///   - modelHash: `Model hash`, the checkpoint file's (`FileHash.modelHash`), nil to leave it out.
    ///   - vae: the name of a replacement VAE (`VAE`).
    ///   - extra: fields of the command (e.g. `Denoising strength`), after A1111's standard ones.
    ///   - otherPrompts: prompts besides the prompt and negative prompt (e.g. regions') whose
    ///     embeddings count for `TI hashes`.
    ///   - taggedLoRAs: how many of the model's first LoRAs (those given outside the prompt) are
    ///     written into the prompt as `<lora:NAME:WEIGHT>` tags, as A1111 records the LoRAs its
    ///     settings add, so that the parameters reproduce the picture.
    ///   - precision: `Precision`, written when not "fp32".
    /// `Lora hashes` name the model's LoRAs with A1111's short hash of each file (a file that
    /// vanished since it loaded is left out rather than failing the render).
    public func parameters(_ s: PanoramaSettings, modelHash: String?, vae: String? = nil, extra: [Infotext.Field] = [],
                           otherPrompts: [String] = [], taggedLoRAs: Int = 0,
                           precision: String = Compute.precision.rawValue) throws -> String {
        var embeddingHashes: [(name: String, hash: String)] = []
        for (name, url) in try embeddingFiles(s, prompts: [s.prompt, s.negativePrompt] + otherPrompts) {
            embeddingHashes.append((name, try FileHash.embeddingShortHash(of: url)))
        }
        let emphasis: String? = s.emphasis == .none ? "none" : nil
        var loraHashes: [(name: String, hash: String)] = []
        for application in model.loras where !loraHashes.contains(where: { $0.name == application.name }) {
            guard let short = try? FileHash.loraShortHash(of: application.url) else { continue }
            loraHashes.append((application.name, short))
        }
        var s = s
        for application in model.loras.prefix(taggedLoRAs) {
            let weights = application.textEncoderWeight == application.unetWeight ? "\(application.unetWeight)"
                : "\(application.textEncoderWeight):\(application.unetWeight)"
            s.prompt += "<lora:\(application.name):\(weights)>"
        }
        return Infotext(settings: s, model: model.name, modelHash: modelHash, vae: vae, extra: extra,
                        loraHashes: loraHashes, embeddingHashes: embeddingHashes, emphasis: emphasis,
                        precision: precision).text
    }
}
