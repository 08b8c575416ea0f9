import Foundation
import Schedulers

/// A field of an infotext that cannot be used as a setting.
public enum InfotextError: Error, CustomStringConvertible, Equatable {
    /// `key`'s value is not of the kind the setting needs.
    case invalidValue(key: String, value: String, expected: String)
    /// A sampler (and schedule type) that this program does not have.
    case unknownSampler(name: String, available: [String])

    public var description: String {
        switch self {
        case let .invalidValue(key, value, expected):
            return "\"\(key): \(value)\" is not \(expected)"
        case let .unknownSampler(name, available):
            return "the sampler \(name) is not available here; available: \(available.joined(separator: ", "))"
        }
    }
}

extension Infotext {
    /// The infotext of a render: A1111's fields in A1111's order, then this program's own.
    ///
    /// - Parameters:
    ///   - settings: the render's settings (prompt as typed, `<lora:…>` tags included).
    ///   - model: `Model`, the checkpoint's name; `modelHash`: `Model hash` (`FileHash.modelHash`).
    ///   - vae: `VAE`, the name of a replacement VAE.
    ///   - extra: fields of the command (e.g. `Denoising strength`, `Regions`), after A1111's own.
    ///   - loraHashes: `Lora hashes`, each LoRA's name (as in its tag) and 12-hex short hash.
    ///   - embeddingHashes: `TI hashes`, each embedding's name and 12-hex short hash.
    ///   - emphasis: `Emphasis`, written when not A1111's default (pass "none" when it is off).
    ///   - precision: `Precision`, written when not "fp32".
    public init(settings s: PanoramaSettings, model: String, modelHash: String? = nil, vae: String? = nil,
                extra: [Field] = [], loraHashes: [(name: String, hash: String)] = [],
                embeddingHashes: [(name: String, hash: String)] = [], emphasis: String? = nil,
                precision: String? = nil) {
        var fields = [Field("Steps", String(s.steps))]
        switch s.sampler {
        // A1111 1.9+ names the σ spacing separately; without a Schedule type an A1111 PNG means
        // the model's own (uniform) timesteps, as older A1111 did
        case .dpmSolver2M: fields += [Field("Sampler", "DPM++ 2M"), Field("Schedule type", "Uniform")]
        case .dpmSolver2MKarras: fields += [Field("Sampler", "DPM++ 2M"), Field("Schedule type", "Karras")]
        // trailing timesteps on Euler are A1111's "SGM Uniform" (what turbo and Lightning models ask for)
        case .euler where s.timestepSpacing == "trailing", .eulerAncestral where s.timestepSpacing == "trailing":
            fields += [Field("Sampler", s.sampler.displayName), Field("Schedule type", "SGM Uniform")]
        default: fields.append(Field("Sampler", s.sampler.displayName))
        }
        fields += [Field("CFG scale", Self.formatNumber(s.guidanceScale)), Field("Seed", String(s.seed)),
                   Field("Size", "\(s.width)x\(s.height)")]
        if let modelHash { fields.append(Field("Model hash", modelHash)) }
        fields.append(Field("Model", model))
        if let vae { fields.append(Field("VAE", vae)) }
        if s.effectiveEta > 0 { fields.append(Field("Eta", Self.formatNumber(s.effectiveEta))) }
        if let spacing = s.timestepSpacing, !(spacing == "trailing" && [.euler, .eulerAncestral].contains(s.sampler)) {
            fields.append(Field("Timestep spacing", spacing))
        }
        // A1111 counts the last layer as 1: its "Clip skip: 2" is one layer skipped
        if s.clipSkip > 0 { fields.append(Field("Clip skip", String(s.clipSkip + 1))) }
        fields += extra
        if !loraHashes.isEmpty {
            fields.append(Field("Lora hashes", loraHashes.map { "\($0.name): \($0.hash)" }.joined(separator: ", ")))
        }
        if !embeddingHashes.isEmpty {
            fields.append(Field("TI hashes", embeddingHashes.map { "\($0.name): \($0.hash)" }.joined(separator: ", ")))
        }
        if let emphasis { fields.append(Field("Emphasis", emphasis)) }
        fields.append(s.spotDiffusion ? Field("SpotDiffusion", "true") : Field("MultiDiffusion stride", String(s.stride)))
        if s.circular { fields.append(Field("Circular", "true")) }
        if s.decodeMethod == .whole { fields.append(Field("VAE decode", "whole")) }
        if s.windowWeighting != .uniform { fields.append(Field("Window weights", s.windowWeighting.name)) }
        if let precision, precision != "fp32" { fields.append(Field("Precision", precision)) }
        if s.noiseFusion != .canvas { fields.append(Field("Noise fusion", s.noiseFusion.rawValue)) }
        self.init(prompt: s.prompt, negativePrompt: s.negativePrompt, fields: fields)
    }

    /// Whole numbers with one decimal ("7.0", as A1111 writes CFG scale), others as Swift prints them.
    public static func formatNumber(_ x: Float) -> String {
        x == x.rounded() ? String(format: "%.1f", x) : String(x)
    }

    /// The settings recorded in this infotext, each nil when absent; an error names a field whose
    /// value cannot be read (e.g. `Steps: many`).
    public func recalledSettings() throws -> RecalledSettings {
        func integer(_ key: String) throws -> Int? {
            guard let v = self[key] else { return nil }
            guard let n = Int(v.trimmingCharacters(in: .whitespaces)) else {
                throw InfotextError.invalidValue(key: key, value: v, expected: "a whole number")
            }
            return n
        }
        func number(_ key: String) throws -> Double? {
            guard let v = self[key] else { return nil }
            guard let x = Double(v.trimmingCharacters(in: .whitespaces)), x.isFinite else {
                throw InfotextError.invalidValue(key: key, value: v, expected: "a number")
            }
            return x
        }
        func flag(_ key: String) throws -> Bool? {
            guard let v = self[key] else { return nil }
            switch v.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true": return true
            case "false": return false
            default: throw InfotextError.invalidValue(key: key, value: v, expected: "true or false")
            }
        }
        var r = RecalledSettings(prompt: prompt, negativePrompt: negativePrompt)
        r.steps = try integer("Steps")
        r.guidanceScale = try number("CFG scale").map(Float.init)
        if let v = self["Seed"] {
            // A1111's seeds are non-negative; -1 ("random") is not a recorded seed
            guard let seed = UInt64(v.trimmingCharacters(in: .whitespaces)) else {
                throw InfotextError.invalidValue(key: "Seed", value: v, expected: "a whole number from 0 up")
            }
            r.seed = seed
        }
        if let v = self["Size"] {
            guard let (w, h) = Self.imageSize(v), let width = Int(w), let height = Int(h) else {
                throw InfotextError.invalidValue(key: "Size", value: v, expected: "WIDTHxHEIGHT")
            }
            (r.width, r.height) = (width, height)
        }
        r.emphasis = self["Emphasis"]
        r.samplerName = self["Sampler"]
        r.scheduleType = self["Schedule type"]
        r.eta = try (number("Eta") ?? number("Eta DDIM")).map(Float.init)
        if let skip = try integer("Clip skip") {
            guard skip >= 1 else { throw InfotextError.invalidValue(key: "Clip skip", value: String(skip), expected: "1 or more") }
            r.clipSkip = skip - 1
        }
        r.stride = try integer("MultiDiffusion stride")
        r.spotDiffusion = try flag("SpotDiffusion")
        r.circular = try flag("Circular")
        if let v = self["Window weights"] {
            guard let weighting = WindowWeighting(name: v) else {
                throw InfotextError.invalidValue(key: "Window weights", value: v, expected: "uniform, gaussian or gaussian:SIGMA")
            }
            r.windowWeighting = weighting
        }
        r.timestepSpacingField = self["Timestep spacing"]
        if let v = self["Noise fusion"] {
            guard let fusion = NoiseFusion(rawValue: v.trimmingCharacters(in: .whitespaces)) else {
                throw InfotextError.invalidValue(key: "Noise fusion", value: v, expected: "canvas or per-window")
            }
            r.noiseFusion = fusion
        }
        r.decode = self["VAE decode"]
        r.precision = self["Precision"]
        r.denoisingStrength = try number("Denoising strength")
        r.bootstrapSteps = try integer("Bootstrap steps")
        r.model = self["Model"]
        r.modelHash = self["Model hash"]
        r.vae = self["VAE"]
        return r
    }
}

/// Settings read back from an infotext; nil where it does not record them.
public struct RecalledSettings: Sendable, Equatable {
    public var prompt: String
    public var negativePrompt: String
    public var steps: Int?
    public var guidanceScale: Float?
    public var seed: UInt64?
    public var width: Int?
    public var height: Int?
    /// `Sampler` and `Schedule type` as written; `sampler()` maps them to one of this program's.
    public var samplerName: String?
    public var scheduleType: String?
    public var eta: Float?
    /// `Timestep spacing` as written (`Schedule type: SGM Uniform` on Euler also means "trailing";
    /// see `timestepSpacing()`).
    public var timestepSpacingField: String?
    public var noiseFusion: NoiseFusion?
    /// This program's count (layers skipped; A1111's "Clip skip" minus 1).
    public var clipSkip: Int?
    public var stride: Int?
    public var spotDiffusion: Bool?
    public var circular: Bool?
    public var windowWeighting: WindowWeighting?
    /// `VAE decode` ("whole" or "tiled") and `Precision` ("bf16"), as written.
    public var decode: String?
    public var precision: String?
    public var denoisingStrength: Double?
    public var bootstrapSteps: Int?
    public var model: String?
    public var modelHash: String?
    public var vae: String?
    /// `Emphasis`: "none" when the prompt was read literally (`--emphasis none`).
    public var emphasis: String?

    public init(prompt: String, negativePrompt: String) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
    }

    /// The A1111 names of the samplers this program has, as `sampler()` accepts them.
    public static let availableSamplers = ["DDIM", "DPM++ 2M", "DPM++ 2M Karras (or Schedule type: Karras)",
                                           "Euler", "Euler a (both also with Schedule type: SGM Uniform)", "LCM", "TCD"]

    /// The recorded timestep spacing: `Timestep spacing`, or "trailing" for A1111's
    /// `Schedule type: SGM Uniform` (nil: the model's own).
    public var timestepSpacing: String? {
        if let field = timestepSpacingField?.trimmingCharacters(in: .whitespaces) { return field }
        return scheduleType?.trimmingCharacters(in: .whitespaces).lowercased() == "sgm uniform" ? "trailing" : nil
    }

    /// The recorded sampler as one of this program's (nil when none is recorded): A1111's names
    /// ("DPM++ 2M" with `Schedule type: Karras`, or the older "DPM++ 2M Karras"), or this
    /// program's own (`dpm++2m-karras`). Any other sampler or schedule type is an error that
    /// names it and the available ones.
    public func sampler() throws -> Sampler? {
        guard let name = samplerName?.trimmingCharacters(in: .whitespaces) else { return nil }
        let schedule = scheduleType?.trimmingCharacters(in: .whitespaces).lowercased()
        // "Automatic" is A1111's default schedule; uniform is the model's own timesteps
        let plain = schedule == nil || schedule == "automatic" || schedule == "uniform"
        let found: Sampler?
        switch name.lowercased() {
        case "ddim": found = plain ? .ddim : nil
        case "dpm++ 2m": found = plain ? .dpmSolver2M : schedule == "karras" ? .dpmSolver2MKarras : nil
        case "dpm++ 2m karras": found = plain || schedule == "karras" ? .dpmSolver2MKarras : nil
        case "euler": found = plain || schedule == "sgm uniform" ? .euler : nil
        case "euler a": found = plain || schedule == "sgm uniform" ? .eulerAncestral : nil
        default: found = Sampler(rawValue: name.lowercased())
        }
        guard let found else {
            let described = scheduleType.map { "\"\(name)\" with schedule type \"\($0)\"" } ?? "\"\(name)\""
            throw InfotextError.unknownSampler(name: described, available: Self.availableSamplers)
        }
        return found
    }
}
