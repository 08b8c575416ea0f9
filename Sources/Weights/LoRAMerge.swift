import Foundation
import Tensors

/// A LoRA and the weights it is applied with: A1111's `<lora:NAME:TE:UNET>` (a single weight
/// means both).
public struct LoRAApplication: Sendable {
    public var lora: LoRA
    public var textEncoderWeight: Float
    public var unetWeight: Float
    /// The name reports and PNG parameters use: a tag's NAME, else the file's stem.
    public var name: String

    public init(lora: LoRA, textEncoderWeight: Float, unetWeight: Float, name: String? = nil) {
        self.lora = lora
        self.textEncoderWeight = textEncoderWeight
        self.unetWeight = unetWeight
        self.name = name ?? lora.name
    }

    public init(lora: LoRA, weight: Float = 1) {
        self.init(lora: lora, textEncoderWeight: weight, unetWeight: weight)
    }
}

/// What a model keeps of a LoRA merged into it: the file, its name and weights, not its tensors
/// (an LCM-LoRA's are 270 MB as float32).
public struct AppliedLoRA: Sendable, Equatable {
    public var name: String
    public var url: URL
    public var textEncoderWeight: Float
    public var unetWeight: Float
}

extension LoRAApplication {
    public var applied: AppliedLoRA {
        AppliedLoRA(name: name, url: lora.url, textEncoderWeight: textEncoderWeight, unetWeight: unetWeight)
    }
}

/// Merges LoRAs into a model's weights as they load: every module of every LoRA must name a
/// weight of the model, with the right size, or nothing is applied.
public enum LoRAMerge {
    /// The UNet and text encoder weight sets with `loras` added (`WeightSet.adding`). Throws
    /// `LoRAError.partialMatch` when some module of a LoRA names no weight of the model, and
    /// `LoRAError.shapeMismatch` when one has another size.
    public static func apply(_ loras: [LoRAApplication], unet: WeightSet, textEncoder: WeightSet) throws
        -> (unet: WeightSet, textEncoder: WeightSet) {
        guard !loras.isEmpty else { return (unet, textEncoder) }
        let unetIndex = ModuleIndex(unet, root: nil), textIndex = ModuleIndex(textEncoder, root: "text_model.")
        var unetDeltas: [String: [WeightDelta]] = [:], textDeltas: [String: [WeightDelta]] = [:]
        for application in loras {
            let lora = application.lora
            var unmatched: [String] = []
            var found: [(LoRA.Module, String)] = []
            for module in lora.modules {
                let index = module.component == .unet ? unetIndex : textIndex
                if let weight = index.weight(for: module.path, underscored: lora.format == .kohya) {
                    found.append((module, weight))
                } else if lora.format == .kohya, module.component == .textEncoder, let parts = openCLIPParts(module) {
                    let weights = parts.compactMap { part in
                        textIndex.weight(for: part.path, underscored: true).map { (part.module, $0) }
                    }
                    if weights.count == parts.count { found += weights } else { unmatched.append(module.key) }
                } else {
                    unmatched.append(module.key)
                }
            }
            guard unmatched.isEmpty else {
                throw LoRAError.partialMatch(lora.url.path, matched: found.count, total: lora.modules.count,
                                             unmatched: unmatched)
            }
            for (module, weight) in found {
                let unetModule = module.component == .unet
                let set = unetModule ? unet : textEncoder
                let multiplier = unetModule ? application.unetWeight : application.textEncoderWeight
                let delta = WeightDelta(up: module.up, down: module.down, scale: multiplier * module.scale)
                let shape = set.shape(of: weight) ?? []
                guard delta.fits(shape) else {
                    throw LoRAError.shapeMismatch(lora.url.path, module: module.key, delta: [delta.rows, delta.columns],
                                                  weight: shape, tensor: weight)
                }
                guard multiplier != 0 else { continue }
                if unetModule { unetDeltas[weight, default: []].append(delta) } else { textDeltas[weight, default: []].append(delta) }
            }
        }
        return (try unet.adding(unetDeltas), try textEncoder.adding(textDeltas))
    }
}

/// A kohya text-encoder module named as SD 2.x single-file checkpoints name OpenCLIP's layers
/// (`model_transformer_resblocks_3_mlp_c_fc`), as the transformers module(s) it changes: the fused
/// `attn_in_proj` is query, key and value, each changed by a third of `up`'s rows. Nil for other names.
private func openCLIPParts(_ module: LoRA.Module) -> [(module: LoRA.Module, path: String)]? {
    let prefix = "model_transformer_resblocks_"
    guard module.path.hasPrefix(prefix) else { return nil }
    let rest = module.path.dropFirst(prefix.count)
    guard let underscore = rest.firstIndex(of: "_"), let layer = Int(rest[..<underscore]) else { return nil }
    let name = String(rest[rest.index(after: underscore)...]), base = "encoder_layers_\(layer)_"
    let renamed = ["attn_out_proj": "self_attn_out_proj", "mlp_c_fc": "mlp_fc1", "mlp_c_proj": "mlp_fc2"]
    if let target = renamed[name] { return [(module, base + target)] }
    guard name == "attn_in_proj", let rows = module.up.shape.first, rows % 3 == 0 else { return nil }
    let third = rows / 3, width = module.up.count / rows
    return ["q", "k", "v"].enumerated().map { j, x in
        var part = module
        part.up = Tensor(shape: [third] + module.up.shape.dropFirst(),
                         data: Array(module.up.data[(j * third * width)..<((j + 1) * third * width)]))
        return (part, base + "self_attn_\(x)_proj")
    }
}

/// A component's weights by module path: dotted ("down_blocks.0.resnets.0.conv1") for PEFT files,
/// and with underscores for dots, as kohya writes them. The text encoder's paths drop the
/// `text_model.` root, which some checkpoints store and some (transformers 5) do not.
private struct ModuleIndex {
    var dotted: [String: String] = [:]
    /// nil where two module paths would read the same with underscores.
    var underscored: [String: String?] = [:]

    init(_ set: WeightSet, root: String?) {
        for name in set.names where name.hasSuffix(".weight") {
            var path = String(name.dropLast(".weight".count))
            if let root, path.hasPrefix(root) { path.removeFirst(root.count) }
            dotted[path] = name
            let flat = path.replacingOccurrences(of: ".", with: "_")
            underscored[flat] = underscored[flat] == nil ? name : .some(nil)
        }
    }

    func weight(for path: String, underscored flat: Bool) -> String? {
        flat ? (underscored[path] ?? nil) : dotted[path]
    }
}
