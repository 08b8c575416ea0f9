import ArgumentParser
import Foundation
import Imaging
import Models
import Renderer
import Tensors
import Weights

/// `panorama [render]`: text to panorama with MultiDiffusion.
struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a panorama from a prompt (the default command).",
        discussion: """
            Overlapping windows of the model's native size (512x512 for Stable Diffusion 1.x/2.x) \
            are denoised together and averaged at every step, so the whole canvas forms one \
            coherent image of any width.

            Examples:
              panorama --W 2048 --H 512 --prompt "snowy mountains at sunset"
              panorama --preset wrap-360 --prompt "a calm sea under a starry night sky"
              panorama --model ~/models/stable-diffusion-v1-5 --W 4096 --H 512 --prompt "..." --seed 1234
            """)

    @Option(name: .customLong("W"), help: ArgumentHelp("Width in pixels, a multiple of 8 (default 2048).", valueName: "pixels"))
    var width: Int?

    @Option(name: .customLong("H"), help: ArgumentHelp("Height in pixels, a multiple of 8 (default 512).", valueName: "pixels"))
    var height: Int?

    @Option(name: .long, help: "What to render.")
    var prompt: String

    @Option(name: .long, help: "What to steer away from (default: empty).")
    var negativePrompt: String?

    @Option(name: .long, help: "Denoising steps (default 50).")
    var steps: Int?

    @Option(name: .long, help: "Classifier-free guidance scale; 1 or less disables guidance (default 7.5).")
    var guidance: Float?

    @Option(name: .long, help: "Random seed (default: a random one, printed).")
    var seed: UInt64?

    @Option(name: .long, help: "Sampler: ddim (default ddim).")
    var scheduler: String?

    @Option(name: .long, help: "DDIM eta: 0 is deterministic, 1 adds the most fresh noise (default 0).")
    var eta: Float?

    @Option(name: .long, help: "Window stride in latent pixels (8 pixels each); smaller is smoother and slower (default 8).")
    var stride: Int?

    @Option(name: .long, help: "Windows per UNet call (default 1).")
    var viewBatchSize: Int?

    @Flag(name: .long, help: "360° panorama: the right edge wraps to the left.")
    var circular = false

    @Option(name: .long, help: ArgumentHelp("A Stable Diffusion 1.x/2.x diffusers folder (default: the bundled \(Resources.defaultModelName) model).", valueName: "dir"))
    var model: String?

    @Option(name: .long, help: ArgumentHelp("Named defaults from presets/ (see `panorama presets`); flags override it. A preset named like the model's folder applies by itself.", valueName: "name"))
    var preset: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("Output PNG (default: panorama-WxH-SEED.png).", valueName: "file.png"))
    var output: String?

    @Flag(name: .long, help: "Replace the output file if it exists.")
    var overwrite = false

    @Option(name: .long, help: ArgumentHelp("Start from these latents (safetensors, float32 tensor \"latents\" [1, 4, H/8, W/8]) instead of the seed.", valueName: "file"))
    var latentsIn: String?

    @Option(name: .long, help: ArgumentHelp("Also save the final latents (safetensors, tensor \"latents\").", valueName: "file"))
    var latentsOut: String?

    @Option(name: .long, help: ArgumentHelp("VAE decode: tiled (bounded memory, whole-image normalisation, exact 360° wrap) or whole (diffusers' single pass) (default tiled).", valueName: "method"))
    var decode: String?

    @Option(name: .long, help: "Compute threads (default 2).")
    var threads: Int?

    @Flag(name: .long, help: "No progress output.")
    var quiet = false

    func run() throws {
        var progress = ProgressReporter(quiet: quiet)
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            Compute.threads = threads
        }
        let modelURL = try modelLocation()
        // A preset named after the model folder holds that model's recommended settings.
        let modelPreset = try Preset.all(required: false).first { $0.name == modelURL.lastPathComponent }?.preset
        let preset = try self.preset.map(Preset.named).map { $0.over(modelPreset) } ?? modelPreset
        let schedulerName = scheduler ?? preset?.scheduler ?? "ddim"
        guard schedulerName == "ddim" else {
            throw ValidationError("unknown scheduler \"\(schedulerName)\"; available: ddim")
        }

        var settings = PanoramaSettings(prompt: prompt, width: width ?? preset?.width ?? 2048,
                                        height: height ?? preset?.height ?? 512)
        settings.negativePrompt = negativePrompt ?? preset?.negativePrompt ?? ""
        settings.steps = steps ?? preset?.steps ?? 50
        settings.guidanceScale = guidance ?? preset?.guidance ?? 7.5
        settings.seed = seed ?? UInt64.random(in: 0..<(1 << 32))
        settings.eta = eta ?? preset?.eta ?? 0
        settings.stride = stride ?? preset?.stride ?? 8
        settings.viewBatchSize = viewBatchSize ?? preset?.viewBatchSize ?? 1
        settings.circular = circular || (preset?.circular ?? false)
        switch decode ?? "tiled" {
        case "tiled": settings.decodeMethod = .tiled(VAETiling())
        case "whole": settings.decodeMethod = .whole
        case let other: throw ValidationError("unknown --decode \"\(other)\"; available: tiled, whole")
        }

        let outputURL = try outputLocation(settings)
        let latentsOutURL = try latentsOut.map { try checkedWritable(URL(fileURLWithPath: $0), replace: true) }

        let loadStart = Date()
        progress.note("loading \(modelURL.path)")
        let model = try StableDiffusionModel(folder: modelURL)
        let pipeline = PanoramaPipeline(model: model)
        try pipeline.validate(settings)
        let startLatents = try latentsIn.map { try readLatents($0) }
        if let startLatents { try pipeline.checkLatents(startLatents, for: settings) }
        progress.note(String(format: "model loaded in %.1f s; seed %llu", Date().timeIntervalSince(loadStart), settings.seed))

        var loop = try pipeline.denoisingLoop(settings, latents: startLatents)
        progress.note("\(settings.width)x\(settings.height): \(loop.views.count) windows x \(loop.stepCount) steps")
        progress.beginSteps()
        while let report = loop.next() {
            progress.step(report.index + 1, of: report.count, views: report.views)
        }
        if let latentsOutURL {
            try SafeTensorsWriter.write([(name: "latents", tensor: loop.latents)], dtype: .f32,
                                        metadata: ["seed": String(settings.seed), "prompt": settings.prompt],
                                        to: latentsOutURL)
        }
        progress.note("decoding")
        let image = RGBImage(decoded: try pipeline.decode(loop.latents, circular: settings.circular,
                                                           method: settings.decodeMethod))
        try PNG.write(image, to: outputURL, text: [(key: "parameters", value: parameters(settings, model: model.name))])
        print(outputURL.path)
    }

    /// The generation parameters in the "parameters" text format of AUTOMATIC1111, which ComfyUI
    /// and image browsers also read.
    func parameters(_ s: PanoramaSettings, model: String) -> String {
        var lines = [s.prompt]
        if !s.negativePrompt.isEmpty { lines.append("Negative prompt: \(s.negativePrompt)") }
        var fields = ["Steps: \(s.steps)", "Sampler: DDIM", "CFG scale: \(formatNumber(s.guidanceScale))",
                      "Seed: \(s.seed)", "Size: \(s.width)x\(s.height)", "Model: \(model)"]
        if s.eta > 0 { fields.append("Eta: \(formatNumber(s.eta))") }
        fields.append("MultiDiffusion stride: \(s.stride)")
        if s.circular { fields.append("Circular: true") }
        if s.decodeMethod == .whole { fields.append("VAE decode: whole") }
        lines.append(fields.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }

    private func formatNumber(_ x: Float) -> String {
        x == x.rounded() ? String(format: "%.1f", x) : String(x)
    }

    private func modelLocation() throws -> URL {
        if let model { return URL(fileURLWithPath: (model as NSString).expandingTildeInPath) }
        guard let url = Resources.defaultModel else {
            throw ValidationError("no model: pass --model DIR (a Stable Diffusion diffusers folder); the bundled model models/\(Resources.defaultModelName) was not found")
        }
        return url
    }

    /// The output path, checked before any work: not an existing file unless --overwrite, and in
    /// a writable folder. Without --output, the first free default name.
    private func outputLocation(_ s: PanoramaSettings) throws -> URL {
        if let output {
            guard output.lowercased().hasSuffix(".png") else {
                throw ValidationError("--output must name a .png file, not \(output)")
            }
            return try checkedWritable(URL(fileURLWithPath: output), replace: overwrite)
        }
        let base = "panorama-\(s.width)x\(s.height)-\(s.seed)"
        var candidate = URL(fileURLWithPath: "\(base).png")
        var n = 2
        while FileManager.default.fileExists(atPath: candidate.path) {
            candidate = URL(fileURLWithPath: "\(base)-\(n).png")
            n += 1
        }
        return try checkedWritable(candidate, replace: false)
    }

    private func checkedWritable(_ url: URL, replace: Bool) throws -> URL {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { throw ValidationError("\(url.path) is a folder, not a file") }
            if !replace { throw ValidationError("\(url.path) exists; pass --overwrite to replace it") }
        }
        let folder = url.deletingLastPathComponent().path
        guard fm.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("cannot write \(url.path): the folder \(folder) does not exist")
        }
        guard access(folder, W_OK) == 0 else {
            throw ValidationError("cannot write \(url.path): the folder \(folder) is not writable")
        }
        return url
    }

    private func readLatents(_ path: String) throws -> Tensor {
        let file = try SafeTensorsFile(url: URL(fileURLWithPath: path))
        guard file.contains("latents") else {
            throw ValidationError("\(path) has no tensor named \"latents\" (it has: \(file.names.joined(separator: ", ")))")
        }
        return try file.tensor("latents")
    }
}
