import Foundation
import Tensors

/// A LoRA file: low-rank changes to a Stable Diffusion model's UNet and text encoder, in the
/// kohya / AUTOMATIC1111 layout or diffusers' PEFT layout.
///
/// - kohya (also LCM-LoRA and most files shared for A1111): `lora_unet_<module>` and
///   `lora_te_<module>`, where `<module>` is the diffusers / transformers module path with dots
///   written as underscores, each with `.lora_down.weight`, `.lora_up.weight` and optionally
///   `.alpha`.
/// - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (and `text_encoder.…`),
///   with alphas as `<module>.alpha` tensors or in the `lora_adapter_metadata` header entry
///   that diffusers writes (`lora_alpha`, `alpha_pattern`, `use_rslora`).
///
/// Each module changes its weight by `multiplier · scale · up · down`, scale = alpha / rank
/// (alpha = rank when the file has none), as kohya, PEFT and A1111 compute it. LyCORIS LoHa,
/// LoKr, Tucker (`lora_mid`) and DoRA modules, and SDXL files, are refused by name rather than
/// partly applied.
public struct LoRA: Sendable {
    /// The model component a module changes.
    public enum Component: String, Sendable {
        case unet
        case textEncoder = "text encoder"
    }

    /// How the file names its modules.
    public enum Format: String, Sendable {
        case kohya
        case peft = "diffusers/PEFT"
    }

    /// One module's low-rank pair.
    public struct Module: Sendable {
        public var component: Component
        /// The module's name as the file has it (without the `.lora_down.weight` part).
        public var key: String
        /// The module path in the component: dotted (PEFT) or with underscores for dots (kohya),
        /// without the text encoder's `text_model` root.
        public var path: String
        public var down: Tensor
        public var up: Tensor
        public var alpha: Float?
        /// PEFT's rank-stabilised scaling (alpha / √rank).
        public var rankStabilized = false

        public var rank: Int { down.shape.first ?? 0 }

        /// alpha / rank (alpha / √rank for rank-stabilised PEFT adapters); 1 without an alpha.
        public var scale: Float {
            guard let alpha, rank > 0 else { return 1 }
            return rankStabilized ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
        }
    }

    public let url: URL
    /// The file's stem, the name A1111's `<lora:NAME:…>` tags use.
    public let name: String
    public let format: Format
    public let modules: [Module]

    /// Reads and checks the LoRA at `url` (`.safetensors`).
    public init(url: URL) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw LoRAError.missingFile(url.path)
        }
        try self.init(file: SafeTensorsFile.open(url))
    }

    /// Reads and checks the LoRA in `file`.
    public init(file: SafeTensorsFile) throws {
        url = file.url
        name = file.url.deletingPathExtension().lastPathComponent
        let path = file.url.path
        let names = file.names
        guard !names.isEmpty else { throw LoRAError.invalid(path, "holds no tensors") }
        try Self.refuseOtherKinds(names, path: path)
        if names.contains(where: { $0.hasPrefix("lora_unet_") || $0.hasPrefix("lora_te_") }) {
            format = .kohya
            modules = try Self.kohyaModules(file)
        } else if names.contains(where: { $0.hasSuffix(".lora_A.weight") || $0.hasSuffix(".lora_B.weight") }) {
            format = .peft
            modules = try Self.peftModules(file)
        } else {
            throw LoRAError.invalid(path, "is not a LoRA in a known layout: no kohya (lora_unet_…, lora_te_…) or "
                + "diffusers/PEFT (….lora_A.weight) keys; first key: \(names[0])")
        }
        for module in modules {
            try Self.check(module, path: path)
        }
    }

    // MARK: - Layouts

    /// Names that mark LoRA kinds this loader does not apply, with what to tell the user.
    private static let otherKinds: [(suffix: String, what: String)] = [
        (".hada_w1_a", "a LyCORIS LoHa (hada_w1_a, …)"), (".lokr_w1", "a LyCORIS LoKr (lokr_w1, …)"),
        (".lokr_w1_a", "a LyCORIS LoKr (lokr_w1_a, …)"), (".lora_mid.weight", "a LyCORIS LoCon with Tucker decomposition (lora_mid)"),
        (".dora_scale", "a DoRA (dora_scale)"), (".lora_magnitude_vector", "a DoRA (lora_magnitude_vector)"),
        (".diff", "a full-weight difference (diff)"), (".w_norm", "a LyCORIS (IA)³ / GLoRA module (w_norm)"),
        (".oft_blocks", "a LyCORIS OFT (oft_blocks)"), (".on_input", "a LyCORIS (IA)³ (on_input)"),
    ]

    private static func refuseOtherKinds(_ names: [String], path: String) throws {
        for (suffix, what) in otherKinds {
            if let key = names.first(where: { $0.hasSuffix(suffix) }) {
                throw LoRAError.unsupportedKind(path, what: what, key: key)
            }
        }
        if let key = names.first(where: { $0.hasPrefix("lora_te1_") || $0.hasPrefix("lora_te2_") || $0.hasPrefix("text_encoder_2.") }) {
            throw LoRAError.otherArchitecture(path, "it has modules for a second text encoder (\(key)), as SDXL LoRAs do; "
                + "this model is Stable Diffusion 1.x/2.x with one text encoder")
        }
    }

    private static func kohyaModules(_ file: SafeTensorsFile) throws -> [Module] {
        let path = file.url.path
        var stems: [String] = []
        var seen = Set<String>()
        for name in file.names {
            guard let dot = name.firstIndex(of: ".") else {
                throw LoRAError.unknownKey(path, name)
            }
            let stem = String(name[..<dot]), part = String(name[name.index(after: dot)...])
            guard stem.hasPrefix("lora_unet_") || stem.hasPrefix("lora_te_") else {
                throw LoRAError.unknownKey(path, name)
            }
            guard ["lora_down.weight", "lora_up.weight", "alpha"].contains(part) else {
                throw LoRAError.unknownKey(path, name)
            }
            if seen.insert(stem).inserted { stems.append(stem) }
        }
        return try stems.map { stem in
            let unet = stem.hasPrefix("lora_unet_")
            let (downName, upName, alphaName) = (stem + ".lora_down.weight", stem + ".lora_up.weight", stem + ".alpha")
            guard file.contains(downName), file.contains(upName) else {
                throw LoRAError.invalid(path, "module \(stem) has \(file.contains(downName) ? "no lora_up" : "no lora_down") weight")
            }
            var modulePath = String(stem.dropFirst(unet ? "lora_unet_".count : "lora_te_".count))
            if !unet, modulePath.hasPrefix("text_model_") { modulePath.removeFirst("text_model_".count) }
            return Module(component: unet ? .unet : .textEncoder, key: stem, path: modulePath,
                          down: try file.tensor(downName), up: try file.tensor(upName),
                          alpha: file.contains(alphaName) ? try scalar(file, alphaName) : nil)
        }
    }

    private static func peftModules(_ file: SafeTensorsFile) throws -> [Module] {
        let path = file.url.path
        let metadata = try PEFTMetadata(file.metadata["lora_adapter_metadata"], path: path)
        var stems: [String] = []
        var seen = Set<String>()
        for name in file.names {
            let stem: String
            if name.hasSuffix(".lora_A.weight") {
                stem = String(name.dropLast(".lora_A.weight".count))
            } else if name.hasSuffix(".lora_B.weight") {
                stem = String(name.dropLast(".lora_B.weight".count))
            } else if name.hasSuffix(".alpha") {
                stem = String(name.dropLast(".alpha".count))
            } else {
                throw LoRAError.unknownKey(path, name)
            }
            guard stem.hasPrefix("unet.") || stem.hasPrefix("text_encoder.") else {
                throw LoRAError.unknownKey(path, name)
            }
            if seen.insert(stem).inserted { stems.append(stem) }
        }
        return try stems.map { stem in
            let unet = stem.hasPrefix("unet.")
            let component = unet ? "unet" : "text_encoder"
            let (downName, upName, alphaName) = (stem + ".lora_A.weight", stem + ".lora_B.weight", stem + ".alpha")
            guard file.contains(downName), file.contains(upName) else {
                throw LoRAError.invalid(path, "module \(stem) has \(file.contains(downName) ? "no lora_B" : "no lora_A") weight")
            }
            var modulePath = String(stem.dropFirst(component.count + 1))
            if !unet, modulePath.hasPrefix("text_model.") { modulePath.removeFirst("text_model.".count) }
            var module = Module(component: unet ? .unet : .textEncoder, key: stem, path: modulePath,
                                down: try file.tensor(downName), up: try file.tensor(upName), alpha: nil)
            if file.contains(alphaName) {
                module.alpha = try scalar(file, alphaName)
            } else if let settings = metadata.components[component] {
                module.alpha = settings.alpha(for: String(stem.dropFirst(component.count + 1)))
                module.rankStabilized = settings.rankStabilized
            }
            return module
        }
    }

    private static func scalar(_ file: SafeTensorsFile, _ name: String) throws -> Float {
        let t = try file.tensor(name)
        guard t.count == 1 else {
            throw LoRAError.invalid(file.url.path, "\(name) should be one number but has shape \(t.shape)")
        }
        return t.data[0]
    }

    private static func check(_ module: Module, path: String) throws {
        let (down, up) = (module.down, module.up)
        guard [2, 4].contains(down.rank), [2, 4].contains(up.rank), down.shape.allSatisfy({ $0 > 0 }),
              up.shape.allSatisfy({ $0 > 0 }) else {
            throw LoRAError.invalid(path, "module \(module.key) has down shape \(down.shape) and up shape \(up.shape); "
                + "expected [rank, in] or [rank, in, kh, kw] and [out, rank] or [out, rank, 1, 1]")
        }
        guard up.shape[1] == down.shape[0], up.rank == 2 || (up.shape[2] == 1 && up.shape[3] == 1) else {
            throw LoRAError.rankMismatch(path, module: module.key, down: down.shape, up: up.shape)
        }
        guard down.data.allSatisfy(\.isFinite), up.data.allSatisfy(\.isFinite), module.alpha?.isFinite ?? true else {
            throw LoRAError.invalid(path, "module \(module.key) has values that are not finite numbers (NaN or infinity)")
        }
    }
}

/// diffusers' `lora_adapter_metadata` header entry: each component's PEFT `LoraConfig` with keys
/// prefixed by the component ("unet.lora_alpha", "text_encoder.alpha_pattern", …).
private struct PEFTMetadata {
    struct Settings {
        var alpha: Float?
        /// Module name pattern → alpha (PEFT matches a pattern against the end of the module path).
        var alphaPattern: [(String, Float)] = []
        var rankStabilized = false

        func alpha(for module: String) -> Float? {
            for (pattern, value) in alphaPattern where module == pattern || module.hasSuffix("." + pattern) {
                return value
            }
            return alpha
        }
    }

    var components: [String: Settings] = [:]

    init(_ text: String?, path: String) throws {
        guard let text else { return }
        let value: JSON
        do {
            value = try Array(text.utf8).withUnsafeBytes { try JSON.parse($0) }
        } catch {
            throw LoRAError.invalid(path, "has a lora_adapter_metadata entry that is not valid JSON (\(error))")
        }
        guard case let .object(entries) = value else {
            throw LoRAError.invalid(path, "has a lora_adapter_metadata entry that is not a JSON object")
        }
        for (key, item) in entries {
            guard let dot = key.firstIndex(of: ".") else { continue }
            let component = String(key[..<dot]), field = String(key[key.index(after: dot)...])
            var settings = components[component] ?? Settings()
            switch (field, item) {
            case let ("lora_alpha", .int(alpha)):
                settings.alpha = Float(alpha)
            case let ("lora_alpha", .double(alpha)):
                settings.alpha = Float(alpha)
            case let ("alpha_pattern", .object(patterns)):
                settings.alphaPattern = patterns.compactMap { pattern, value in
                    switch value {
                    case let .int(alpha): return (pattern, Float(alpha))
                    case let .double(alpha): return (pattern, Float(alpha))
                    default: return nil
                    }
                }
            case let ("use_rslora", .bool(flag)):
                settings.rankStabilized = flag
            case ("use_dora", .bool(true)):
                throw LoRAError.unsupportedKind(path, what: "a DoRA (use_dora in its metadata)", key: key)
            default:
                break
            }
            components[component] = settings
        }
    }
}

/// What is wrong with a LoRA file or its use; each message names the file.
public enum LoRAError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    case missingFile(String)
    case invalid(String, String)
    case unknownKey(String, String)
    case unsupportedKind(String, what: String, key: String)
    case otherArchitecture(String, String)
    case rankMismatch(String, module: String, down: [Int], up: [Int])
    /// Only some of the file's modules exist in the model.
    case partialMatch(String, matched: Int, total: Int, unmatched: [String])
    /// A module exists but its size is not the model weight's.
    case shapeMismatch(String, module: String, delta: [Int], weight: [Int], tensor: String)
    /// A `--lora` option or `<lora:…>` tag that cannot be used (the message says why).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case let .invalidRequest(message):
            return message
        case let .missingFile(path):
            return "LoRA \(path): no such file"
        case let .invalid(path, problem):
            return "LoRA \(path) \(problem)"
        case let .unknownKey(path, key):
            return "LoRA \(path): unknown key \"\(key)\"; expected kohya names (lora_unet_…/lora_te_… with "
                + ".lora_down.weight, .lora_up.weight, .alpha) or diffusers/PEFT names (unet.….lora_A.weight, "
                + ".lora_B.weight)"
        case let .unsupportedKind(path, what, key):
            return "LoRA \(path) is \(what) (key \"\(key)\"), which panorama does not apply; only plain LoRA and "
                + "LoCon files (down/up pairs) are supported"
        case let .otherArchitecture(path, why):
            return "LoRA \(path) is for another architecture: \(why)"
        case let .rankMismatch(path, module, down, up):
            return "LoRA \(path): module \(module) has a down weight of shape \(down) and an up weight of shape "
                + "\(up), whose ranks (down's first and up's second dimension) disagree; the file is corrupt"
        case let .partialMatch(path, matched, total, unmatched):
            let shown = unmatched.prefix(3).joined(separator: ", ") + (unmatched.count > 3 ? ", …" : "")
            let ldm = unmatched.contains { ["input_blocks", "middle_block", "output_blocks"].contains(where: $0.contains) }
            return "LoRA \(path): only \(matched) of its \(total) modules match this model (not found: \(shown)); "
                + (ldm ? "its UNet modules are named after the original (LDM) layout (input_blocks, …), which is SDXL's "
                    + "kohya naming and is not mapped here for SD 1.x/2.x; kohya's diffusers names (down_blocks, …) are"
                    : "it is for another architecture or another model family (SD 1.x, SD 2.x, SDXL)")
        case let .shapeMismatch(path, module, delta, weight, tensor):
            return "LoRA \(path): module \(module) changes a weight of shape \(delta) but the model's \(tensor) "
                + "has shape \(weight); the LoRA is for another architecture (e.g. SD 2.x or SDXL vs SD 1.x)"
        }
    }

    public var errorDescription: String? { description }
}
