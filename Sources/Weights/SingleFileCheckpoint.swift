import Foundation

/// A Stable Diffusion 1.x / 2.x checkpoint in one `.safetensors` file (or a PyTorch `.ckpt`, whose
/// weights sit under `state_dict.`, read by the restricted unpickler), in the original (LDM) layout
/// that AUTOMATIC1111 and ComfyUI use: `model.diffusion_model.…` (UNet), `first_stage_model.…`
/// (VAE) and `cond_stage_model.transformer.…` (SD 1.x's CLIP) or `cond_stage_model.model.…`
/// (SD 2.x's OpenCLIP, query/key/value fused in one `in_proj`).
///
/// Each component is a `WeightSet` that answers diffusers' names, so the models load it exactly as
/// they load a diffusers folder. A single file carries no configuration: take it from a diffusers
/// folder of the same architecture, or from `standardConfigurations`, which reads the SD family off
/// the tensor shapes the way diffusers' `from_single_file` does.
public struct SingleFileCheckpoint: Sendable {
    /// How the text encoder is stored.
    public enum TextEncoderLayout: String, Sendable {
        /// OpenAI CLIP in transformers' layout under `cond_stage_model.transformer.` (SD 1.x).
        case clip
        /// OpenCLIP under `cond_stage_model.model.` (SD 2.x).
        case openCLIP
    }

    public let url: URL
    public let textEncoderLayout: TextEncoderLayout
    public let unet: WeightSet
    public let vae: WeightSet
    public let textEncoder: WeightSet

    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."
    static let clipPrefix = "cond_stage_model.transformer."
    static let openCLIPPrefix = "cond_stage_model.model."

    /// Where PyTorch Lightning `.ckpt` files keep the weights (`{'state_dict': {...}, 'global_step': …}`,
    /// flattened to `state_dict.model.diffusion_model.…`); other files have them at the top.
    static let stateDictPrefix = "state_dict."

    /// Opens the checkpoint at `url` (safetensors or PyTorch, told apart by content) and maps its
    /// names; an error names what is missing.
    public init(url: URL) throws {
        let file = try SafeTensorsFile.open(url)
        let root = file.names.contains { $0.hasPrefix(Self.unetPrefix) } ? ""
            : file.names.contains { $0.hasPrefix(Self.stateDictPrefix) } ? Self.stateDictPrefix : ""
        let shapes = Dictionary(uniqueKeysWithValues: file.names.compactMap { name in
            name.hasPrefix(root) ? (String(name.dropFirst(root.count)), file.info(name)?.shape ?? []) : nil
        })
        let names = try Self.componentNames(shapes, path: url.path)
        func rooted(_ map: [String: WeightSet.StoredTensor]) -> [String: WeightSet.StoredTensor] {
            root.isEmpty ? map : map.mapValues { .init(root + $0.name, rows: $0.rows) }
        }
        self.url = url
        textEncoderLayout = names.textLayout
        let base = url.lastPathComponent
        unet = WeightSet(file: file, renaming: rooted(names.unet), label: "unet (\(base))")
        vae = WeightSet(file: file, renaming: rooted(names.vae), label: "vae (\(base))")
        textEncoder = WeightSet(file: file, renaming: rooted(names.text), label: "text_encoder (\(base))")
    }

    /// diffusers name → stored tensor for each component, from the stored names and shapes.
    public static func componentNames(_ shapes: [String: [Int]], path: String) throws
        -> (unet: [String: WeightSet.StoredTensor], vae: [String: WeightSet.StoredTensor],
            text: [String: WeightSet.StoredTensor], textLayout: TextEncoderLayout) {
        let stored = shapes.keys.sorted()
        func problem(_ text: String) -> WeightsError {
            .corruptFile(path: path, problem: text)
        }
        if stored.contains(where: { $0.hasPrefix("conditioner.embedders.") }) {
            throw problem("is an SDXL checkpoint (it has conditioner.embedders.*); only Stable Diffusion 1.x and 2.x are supported")
        }
        let unetNames = stored.filter { $0.hasPrefix(unetPrefix) }
        guard !unetNames.isEmpty else {
            throw problem("has no tensors under \"\(unetPrefix)\", so it is not a Stable Diffusion checkpoint in the original single-file layout"
                + (stored.contains("conv_in.weight") ? " (it looks like a lone diffusers UNet file: pass its model folder instead)" : ""))
        }
        guard stored.contains(where: { $0.hasPrefix(vaePrefix) }) else {
            throw problem("has no VAE (no tensors under \"\(vaePrefix)\"); a checkpoint without its VAE cannot be used alone")
        }
        let layout: TextEncoderLayout
        if stored.contains(where: { $0.hasPrefix(clipPrefix) }) {
            layout = .clip
        } else if stored.contains(where: { $0.hasPrefix(openCLIPPrefix) }) {
            layout = .openCLIP
        } else {
            throw problem("has no text encoder (no tensors under \"\(clipPrefix)\" or \"\(openCLIPPrefix)\")")
        }
        let unet = try unetMapping(unetNames, path: path)
        let vae = vaeMapping(stored.filter { $0.hasPrefix(vaePrefix) }, prefix: vaePrefix)
        let text = layout == .clip ? clipMapping(stored.filter { $0.hasPrefix(clipPrefix) })
            : try openCLIPMapping(shapes.filter { $0.key.hasPrefix(openCLIPPrefix) }, path: path)
        return (unet, vae, text, layout)
    }

    // MARK: - UNet

    /// The original UNet numbers its blocks in one sequence per side: `input_blocks.0` is conv_in,
    /// then each down block has `layers_per_block` resnet (+ attention) entries and one downsampler
    /// entry; `output_blocks` has `layers_per_block + 1` entries per up block, the last of which
    /// also holds the upsampler (`.1.conv` without attention, `.2.conv` with it).
    static func unetMapping(_ stored: [String], path: String) throws -> [String: WeightSet.StoredTensor] {
        let keys = stored.map { String($0.dropFirst(unetPrefix.count)) }
        // entries per down block = layers_per_block + 1: the first downsampler sits at that index.
        let firstDownsampler = keys.compactMap { key -> Int? in
            let p = key.split(separator: ".")
            return p.count > 3 && p[0] == "input_blocks" && p[2] == "0" && p[3] == "op" ? Int(p[1]) : nil
        }.min()
        let inputCount = (keys.compactMap { key -> Int? in
            let p = key.split(separator: ".")
            return p.count > 1 && p[0] == "input_blocks" ? Int(p[1]) : nil
        }.max() ?? 0) + 1
        let perBlock = firstDownsampler ?? inputCount
        guard perBlock >= 2 else {
            throw WeightsError.corruptFile(path: path, problem: "has a UNet whose input_blocks cannot be grouped into down blocks")
        }
        let top = ["time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
                   "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"]
        var map: [String: WeightSet.StoredTensor] = [:]
        for (key, original) in zip(keys, stored) {
            let p = key.split(separator: ".").map(String.init)
            var name: String?
            if p.count == 3, let t = top["\(p[0]).\(p[1])"] {
                name = "\(t).\(p[2])"
            } else if p.count == 4, let t = top["\(p[0]).\(p[1]).\(p[2])"] {
                name = "\(t).\(p[3])"
            } else if p.count > 3, p[0] == "input_blocks", let i = Int(p[1]), i > 0 {
                let block = (i - 1) / perBlock, layer = (i - 1) % perBlock
                let rest = p[3...].joined(separator: ".")
                if p[2] == "0", p[3] == "op" {
                    name = "down_blocks.\(block).downsamplers.0.conv.\(p[4...].joined(separator: "."))"
                } else if p[2] == "0" {
                    name = resnetName(rest).map { "down_blocks.\(block).resnets.\(layer).\($0)" }
                } else if p[2] == "1" {
                    name = "down_blocks.\(block).attentions.\(layer).\(rest)"
                }
            } else if p.count > 2, p[0] == "middle_block", let i = Int(p[1]) {
                let rest = p[2...].joined(separator: ".")
                name = i == 1 ? "mid_block.attentions.0.\(rest)" : resnetName(rest).map { "mid_block.resnets.\(i / 2).\($0)" }
            } else if p.count > 3, p[0] == "output_blocks", let i = Int(p[1]) {
                let block = i / perBlock, layer = i % perBlock
                let rest = p[3...].joined(separator: ".")
                if p[2] != "0", p[3] == "conv" {
                    name = "up_blocks.\(block).upsamplers.0.conv.\(p[4...].joined(separator: "."))"
                } else if p[2] == "0" {
                    name = resnetName(rest).map { "up_blocks.\(block).resnets.\(layer).\($0)" }
                } else if p[2] == "1" {
                    name = "up_blocks.\(block).attentions.\(layer).\(rest)"
                }
            }
            // Keys outside this scheme (e.g. an upscaler's label_emb) stay unmapped; a model that
            // needs them reports them missing by their diffusers name.
            if let name { map[name] = .init(original) }
        }
        return map
    }

    /// A resnet's layer under its diffusers name ("in_layers.2.weight" → "conv1.weight").
    private static func resnetName(_ rest: String) -> String? {
        let renames = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
                       ("out_layers.3.", "conv2."), ("emb_layers.1.", "time_emb_proj."),
                       ("skip_connection.", "conv_shortcut.")]
        for (old, new) in renames where rest.hasPrefix(old) { return new + rest.dropFirst(old.count) }
        return nil
    }

    // MARK: - VAE

    /// The original decoder counts its up blocks from the smallest resolution's end: `up.0` is
    /// diffusers' last up block. Mid-block attention keeps its 1x1-convolution weights, which the
    /// models accept for linear layers.
    static func vaeMapping(_ stored: [String], prefix: String) -> [String: WeightSet.StoredTensor] {
        let keys = stored.map { String($0.dropFirst(prefix.count)) }
        let upBlocks = Set(keys.compactMap { key -> Int? in
            let p = key.split(separator: ".")
            return p.count > 2 && p[0] == "decoder" && p[1] == "up" ? Int(p[2]) : nil
        }).count
        let attention = ["norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"]
        var map: [String: WeightSet.StoredTensor] = [:]
        for (key, original) in zip(keys, stored) {
            let p = key.split(separator: ".").map(String.init)
            var name: String?
            func shortcut(_ s: ArraySlice<String>) -> String {
                s.joined(separator: ".").replacingOccurrences(of: "nin_shortcut.", with: "conv_shortcut.")
            }
            if p.count == 2 {
                name = key  // quant_conv, post_quant_conv
            } else if p.count == 3, p[1] == "norm_out" {
                name = "\(p[0]).conv_norm_out.\(p[2])"
            } else if p.count == 3 {
                name = key  // encoder/decoder conv_in, conv_out
            } else if p.count > 4, p[1] == "down" || p[1] == "up", let i = Int(p[2]) {
                let kind = p[1] == "down" ? "down_blocks" : "up_blocks"
                let block = p[1] == "down" ? i : upBlocks - 1 - i
                if p[3] == "block", p.count > 5 {
                    name = "\(p[0]).\(kind).\(block).resnets.\(p[4]).\(shortcut(p[5...]))"
                } else if p[3] == "downsample" || p[3] == "upsample" {
                    let sampler = p[1] == "down" ? "downsamplers" : "upsamplers"
                    name = "\(p[0]).\(kind).\(block).\(sampler).0.\(p[4...].joined(separator: "."))"
                }
            } else if p.count > 3, p[1] == "mid", p[2].hasPrefix("block_"), let k = Int(p[2].dropFirst(6)) {
                name = "\(p[0]).mid_block.resnets.\(k - 1).\(shortcut(p[3...]))"
            } else if p.count == 5, p[1] == "mid", p[2] == "attn_1", let layer = attention[p[3]] {
                name = "\(p[0]).mid_block.attentions.0.\(layer).\(p[4])"
            }
            if let name { map[name] = .init(original) }
        }
        return map
    }

    /// A VAE in a file of its own (such as the fine-tuned SD VAEs that AUTOMATIC1111 users pick):
    /// original names, with or without the checkpoint's `first_stage_model.` prefix (so a whole
    /// checkpoint lends its VAE), or diffusers' names; safetensors or PyTorch (`.pt`/`.ckpt` VAEs
    /// keep the weights under `state_dict.`). The file says nothing of the architecture; the caller
    /// supplies the configuration.
    public static func standaloneVAE(url: URL) throws -> WeightSet {
        let file = try SafeTensorsFile.open(url)
        let label = "vae (\(url.lastPathComponent))"
        for prefix in ["", vaePrefix, stateDictPrefix, stateDictPrefix + vaePrefix] where file.contains(prefix + "encoder.down.0.block.0.conv1.weight")
            || file.contains(prefix + "decoder.up.0.block.0.conv1.weight") {
            return WeightSet(file: file, renaming: vaeMapping(file.names.filter { $0.hasPrefix(prefix) }, prefix: prefix),
                             label: label)
        }
        if file.contains("decoder.up_blocks.0.resnets.0.conv1.weight") { return try WeightSet(files: [file], label: label) }
        if file.names.contains(where: { $0.hasPrefix(unetPrefix) || $0.hasPrefix(stateDictPrefix + unetPrefix) }) {
            throw WeightsError.corruptFile(path: url.path, problem: "is a checkpoint without a VAE")
        }
        throw WeightsError.corruptFile(path: url.path, problem: "is not a VAE: it has neither the original names "
            + "(decoder.up.0.block.0…) nor diffusers' (decoder.up_blocks.0.resnets.0…)")
    }

    // MARK: - Text encoders

    /// SD 1.x keeps transformers' CLIPTextModel names under a prefix.
    static func clipMapping(_ stored: [String]) -> [String: WeightSet.StoredTensor] {
        Dictionary(uniqueKeysWithValues: stored.map { (String($0.dropFirst(clipPrefix.count)), .init($0)) })
    }

    /// SD 2.x's OpenCLIP: renamed layers, and the attention's query, key and value as thirds of
    /// one `in_proj` matrix.
    static func openCLIPMapping(_ shapes: [String: [Int]], path: String) throws -> [String: WeightSet.StoredTensor] {
        let top = ["token_embedding.weight": "embeddings.token_embedding.weight",
                   "positional_embedding": "embeddings.position_embedding.weight",
                   "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"]
        let layers = [("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
                      ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")]
        var map: [String: WeightSet.StoredTensor] = [:]
        for (original, shape) in shapes {
            let key = String(original.dropFirst(openCLIPPrefix.count))
            if let t = top[key] { map["text_model." + t] = .init(original); continue }
            let p = key.split(separator: ".", maxSplits: 3).map(String.init)
            guard p.count == 4, p[0] == "transformer", p[1] == "resblocks", let i = Int(p[2]) else { continue }
            let layer = "text_model.encoder.layers.\(i)."
            if p[3] == "attn.in_proj_weight" || p[3] == "attn.in_proj_bias" {
                guard let rows = shape.first, rows % 3 == 0 else {
                    throw WeightsError.corruptFile(path: path, problem: "has \(original) of shape \(shape), "
                        + "which cannot hold query, key and value in equal thirds")
                }
                let kind = p[3].hasSuffix("weight") ? "weight" : "bias", d = rows / 3
                for (j, x) in ["q", "k", "v"].enumerated() {
                    map[layer + "self_attn.\(x)_proj.\(kind)"] = .init(original, rows: j * d ..< (j + 1) * d)
                }
            } else if let (old, new) = layers.first(where: { p[3].hasPrefix($0.0) }) {
                map[layer + new + p[3].dropFirst(old.count)] = .init(original)
            }
        }
        return map
    }
}
