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
                guard let weight = index.weight(for: module.path, underscored: lora.format == .kohya) else {
                    unmatched.append(module.key)
                    continue
                }
                found.append((module, weight))
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
        return (unet.adding(unetDeltas), textEncoder.adding(textDeltas))
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
