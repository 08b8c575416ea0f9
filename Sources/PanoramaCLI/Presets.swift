import ArgumentParser
import Foundation

/// A named set of defaults from `presets/NAME.json`. Model-family presets set sampler settings,
/// render presets set canvas settings; explicit flags always win.
struct Preset: Decodable {
    var description: String
    var width: Int?
    var height: Int?
    var steps: Int?
    var guidance: Float?
    var scheduler: String?
    var eta: Float?
    /// "leading", "linspace" or "trailing" (`--timestep-spacing`).
    var timestepSpacing: String?
    /// LoRAs merged for this preset, as `--lora` takes them (a name in the LoRA folders, or a path; ":WEIGHT").
    var lora: [String]?
    var stride: Int?
    var viewBatchSize: Int?
    var circular: Bool?
    var negativePrompt: String?
    var windowWeights: String?
    /// SpotDiffusion windows (`--spot`).
    var spot: Bool?

    enum CodingKeys: String, CodingKey {
        case description, width, height, steps, guidance, scheduler, eta, stride, circular, spot
        case lora
        case timestepSpacing = "timestep_spacing"
        case viewBatchSize = "view_batch_size"
        case negativePrompt = "negative_prompt"
        case windowWeights = "window_weights"
    }

    /// Every preset in the presets folder, by name. Without the folder: an error, or none when
    /// not `required`.
    static func all(required: Bool = true) throws -> [(name: String, preset: Preset)] {
        guard let folder = Resources.presets else {
            if !required { return [] }
            throw ValidationError("the presets folder was not found (set PANORAMA_PRESETS to its path)")
        }
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        return try files.map { ($0.deletingPathExtension().lastPathComponent, try load($0)) }
    }

    /// This preset with unset fields taken from `base`.
    func over(_ base: Preset?) -> Preset {
        guard let base else { return self }
        return Preset(description: description, width: width ?? base.width, height: height ?? base.height,
                      steps: steps ?? base.steps, guidance: guidance ?? base.guidance,
                      scheduler: scheduler ?? base.scheduler, eta: eta ?? base.eta,
                      timestepSpacing: timestepSpacing ?? base.timestepSpacing, lora: lora ?? base.lora,
                      stride: stride ?? base.stride,
                      viewBatchSize: viewBatchSize ?? base.viewBatchSize, circular: circular ?? base.circular,
                      negativePrompt: negativePrompt ?? base.negativePrompt,
                      windowWeights: windowWeights ?? base.windowWeights, spot: spot ?? base.spot)
    }

    static func named(_ name: String) throws -> Preset {
        let presets = try all()
        guard let match = presets.first(where: { $0.name == name }) else {
            throw ValidationError("unknown preset \"\(name)\"; available: \(presets.map(\.name).joined(separator: ", "))")
        }
        return match.preset
    }

    static func load(_ url: URL) throws -> Preset {
        do {
            return try JSONDecoder().decode(Preset.self, from: Data(contentsOf: url))
        } catch {
            throw ValidationError("\(url.path): not a valid preset: \(error)")
        }
    }
}

/// `panorama presets`: lists the presets.
struct Presets: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the presets and what each sets.")

    func run() throws {
        let presets = try Preset.all()
        let width = presets.map(\.name.count).max() ?? 0
        for (name, preset) in presets {
            print(name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + preset.description)
        }
    }
}
