import ArgumentParser
import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tensors
import Weights

/// The options every generating command shares (render, upscale): prompt, sampler, model,
/// preset, output and progress.
struct GenerationOptions: ParsableArguments {
    @Option(name: .long, help: "What to render (required unless --from-png gives it).")
    var prompt: String?

    @Option(name: .long, help: ArgumentHelp(
        "Start from the generation parameters in a PNG (this program's, AUTOMATIC1111's or compatible): prompt, negative prompt, steps, sampler, CFG scale, seed, size, eta, clip skip and this program's own settings; flags given here win.",
        valueName: "file.png"))
    var fromPng: String?

    @Option(name: .long, help: "What to steer away from (default: empty).")
    var negativePrompt: String?

    @Option(name: .long, help: "Denoising steps (default 50).")
    var steps: Int?

    @Option(name: .long, help: "Classifier-free guidance scale; 1 or less disables guidance (default 7.5).")
    var guidance: Float?

    @Option(name: .long, help: "Random seed (default: a random one, printed).")
    var seed: UInt64?

    @Option(name: .long, help: ArgumentHelp(
        "Sampler: ddim, dpm++2m, dpm++2m-karras, euler, euler-a, lcm or tcd (default ddim, or the model's own LCM or TCD scheduler).",
        discussion: "DPM++ 2M Karras at 20 steps comes close to DDIM at 50; euler-a adds fresh noise every step. lcm and tcd render in 2-8 steps with an LCM or TCD model or LoRA (e.g. --lora lcm-lora.safetensors --scheduler lcm --steps 4 --guidance 1)."))
    var scheduler: String?

    @Option(name: .long, help: "DDIM's eta (0 deterministic, 1 the most fresh noise; default 0) or TCD's gamma (0-1, default 0.3); ddim and tcd only.")
    var eta: Float?

    @Option(name: .long, help: ArgumentHelp(
        "Timestep spacing: leading, linspace or trailing (default: the model's scheduler file's).",
        discussion: "Turbo, Lightning and Hyper-SD models sample 1-4 steps on trailing timesteps (A1111: Schedule type SGM Uniform), e.g. --scheduler euler-a --steps 4 --timestep-spacing trailing --guidance 1.",
        valueName: "spacing"))
    var timestepSpacing: String?

    @Option(name: .long, help: ArgumentHelp(
        "Where samplers that add fresh noise every step (euler-a, lcm, tcd, ddim with eta) add it: canvas (once on the fused canvas: sharp with few steps) or per-window (each window its own noise, then averaged: diffusers' panorama pipeline, which blurs) (default canvas).",
        valueName: "canvas|per-window"))
    var noiseFusion: String?

    @Option(name: .long, help: "Window stride in latent pixels (8 pixels each); smaller is smoother and slower (default 8).")
    var stride: Int?

    @Option(name: .long, help: "Windows per UNet call (default 1).")
    var viewBatchSize: Int?

    @Option(name: .long, help: ArgumentHelp(
        "A Stable Diffusion 1.x/2.x diffusers folder, or a single-file checkpoint: .safetensors, or a PyTorch .ckpt read without running its code (default: the bundled \(Resources.defaultModelName) model).",
        discussion: "A single file (AUTOMATIC1111/ComfyUI layout) is read as SD 1.x or 2.x from its shapes; see --model-config and --prediction-type.",
        valueName: "dir|file"))
    var model: String?

    @Option(name: .long, help: ArgumentHelp(
        "For a single-file --model: a diffusers folder of the same architecture whose configs, tokenizer and scheduler to use (its weights are not read).",
        valueName: "dir"))
    var modelConfig: String?

    @Option(name: .long, help: ArgumentHelp(
        "For a single-file --model: what its UNet predicts, epsilon or v_prediction (default: epsilon for SD 1.x, v_prediction for SD 2.x as in the 768 models; SD 2.x base models need epsilon).",
        valueName: "type"))
    var predictionType: String?

    @Option(name: .long, help: ArgumentHelp(
        "Another VAE of the model's architecture: a diffusers VAE folder, or a .safetensors or PyTorch .pt/.ckpt file (original or diffusers names).",
        valueName: "dir|file"))
    var vae: String?

    @Option(name: .long, help: ArgumentHelp(
        "Decode (and, for upscale, encode) with a tiny autoencoder instead of the model's VAE: much faster, a little less detail. A diffusers AutoencoderTiny folder or its .safetensors file, or TAESD's taesd_decoder / taesd_encoder files (.safetensors or .pth) as A1111 keeps them in models/VAE-approx.",
        discussion: "The TAESD must match the model family (taesd for SD 1.x/2.x); the bundled demo model has its own latent space, which no published TAESD knows.",
        valueName: "dir|file"))
    var taesd: String?

    @Option(name: .long, help: ArgumentHelp(
        "A LoRA to merge into the model (kohya/A1111 or diffusers/PEFT layout; .safetensors or PyTorch .pt/.ckpt/.bin), at WEIGHT (default 1); repeatable.",
        discussion: "Prompts may also ask for LoRAs with A1111's tags <lora:NAME:WEIGHT> or <lora:NAME:TE_WEIGHT:UNET_WEIGHT>, found by NAME in --lora-dir; tags are removed from the text before it is encoded. LoRAs change the whole model: a tag in one region's prompt applies to every region.",
        valueName: "path[:weight]"))
    var lora: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "Where <lora:NAME:…> tags find NAME.safetensors (default: a lora folder beside the model, then the project's models/lora).",
        valueName: "dir"))
    var loraDir: String?

    @Option(name: .long, help: ArgumentHelp("Named defaults from presets/ (see `panorama presets`); flags override it. A preset named like the model's folder applies by itself.", valueName: "name"))
    var preset: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("Output PNG (default: a name from the size and seed).", valueName: "file.png"))
    var output: String?

    @Flag(name: .long, help: "Replace the output file if it exists.")
    var overwrite = false

    @Option(name: .long, help: ArgumentHelp("VAE decode: tiled (bounded memory, whole-image normalisation, exact 360° wrap) or whole (diffusers' single pass) (default tiled).", valueName: "method"))
    var decode: String?

    @Option(name: .long, help: ArgumentHelp("How overlapping windows are averaged: uniform (diffusers' MultiDiffusion) or gaussian (each window fades towards its edges; gaussian:SIGMA sets the width as a fraction of the window, default 0.1) (default uniform).", valueName: "weights"))
    var windowWeights: String?

    @Flag(name: .long, help: ArgumentHelp(
        "SpotDiffusion: side-by-side windows moved by a random offset every step, instead of MultiDiffusion's overlapping ones.",
        discussion: "About 7x fewer UNet calls at the default stride (9 windows instead of 57 at 4096x512); --stride and --window-weights do not apply. For render and upscale (not compose)."))
    var spot = false

    @Option(name: .long, help: "Compute threads (default 2).")
    var threads: Int?

    @Option(name: .long, help: ArgumentHelp("Matrix products in fp32, or bf16 (bfloat16 operands, float32 sums: about 1.4x faster on CPUs with AVX512-BF16, slightly different pixels) (default fp32).", valueName: "fp32|bf16"))
    var precision: String?

    @Flag(name: .long, help: "No progress output.")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp(
        "Render N pictures with seeds SEED, SEED+1, … (AUTOMATIC1111's batch count), loading the model once; with --output NAME.png they are NAME-SEED.png (default 1).",
        valueName: "N"))
    var count = 1

    @Flag(name: .long, help: "With --count: also write a contact sheet of the pictures (NAME-grid.png).")
    var grid = false

    @Option(name: .long, help: ArgumentHelp(
        "Write a preview of the canvas to this PNG every --preview-every steps (replaced atomically), to watch in an image viewer.",
        discussion: "The preview is the output's size: a linear latent-to-RGB map fitted to the model's VAE (milliseconds a step; the fit, about 0.5 s for the bundled model and 1 s for SD 1.5, is made once per VAE and kept in ~/.cache/panorama), or the --taesd decoder's picture (slower).",
        valueName: "file.png"))
    var preview: String?

    @Option(name: .long, help: ArgumentHelp("With --preview: write it every N steps, and after the last (default 1).", valueName: "N"))
    var previewEvery: Int?

    @Option(name: .long, help: ArgumentHelp(
        "How prompts are read: a1111 (AUTOMATIC1111's syntax: (word) x1.1, [word] /1.1, (word:1.3), \\( \\) literal, BREAK; prompts of any length in chunks of 75 tokens) or none (the literal text, cut after 77 tokens, as diffusers) (default a1111).",
        valueName: "a1111|none"))
    var emphasis: String?

    @Option(name: .customLong("embeddings-dir"), help: ArgumentHelp(
        "Folder of textual-inversion embeddings (A1111 or diffusers files; .safetensors or PyTorch .pt/.bin), each called in a prompt by its file name without extension (default: an embeddings folder beside the model, then models/embeddings).",
        valueName: "dir"))
    var embeddingsDir: String?

    @OptionGroup var resumeOptions: ResumeOptions

    /// Applies --threads and finds the model folder and the preset in force (the model's own
    /// preset under an explicit --preset).
    func setUp() throws -> (model: URL, preset: Preset?) {
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            Compute.threads = threads
        }
        Compute.retainFreedMemory()
        switch try precision ?? recalled()?.settings.precision ?? "fp32" {
        case "fp32": Compute.precision = .fp32
        case "bf16":
            guard Compute.hasFastBF16 else {
                throw ValidationError((precision == nil ? "the --from-png picture was rendered with bf16 precision, which" : "--precision bf16")
                    + " needs a CPU with AVX512-BF16 instructions, which this one lacks; use --precision fp32")
            }
            Compute.precision = .bf16
        case let other: throw ValidationError("unknown --precision \"\(other)\"; available: fp32, bf16")
        }
        if let previewEvery {
            guard preview != nil else { throw ValidationError("--preview-every needs --preview FILE.png") }
            guard previewEvery >= 1 else { throw ValidationError("--preview-every must be at least 1, not \(previewEvery)") }
        }
        if let preview {
            guard preview.lowercased().hasSuffix(".png") else { throw ValidationError("--preview must name a .png file, not \(preview)") }
            _ = try checkedWritable(URL(fileURLWithPath: preview), replace: true)
        }
        let modelURL = try modelLocation()
        let modelPreset = try Preset.all(required: false).first { $0.name == modelURL.lastPathComponent }?.preset
        let preset = try self.preset.map(Preset.named).map { $0.over(modelPreset) } ?? modelPreset
        _ = try sampler(preset)
        return (modelURL, preset)
    }

    /// Loads the model, checks `settings` against it and this machine, and reports the load time
    /// and the seed. The tiled VAE's temporary files switch to bfloat16 when float32 ones would
    /// not fit the disk (`encoding`: an input image is encoded at the settings' size too).
    /// `prompts`: every prompt of the render (negative and region prompts too), whose `<lora:…>`
    /// tags add LoRAs to the model.
    func loadPipeline(_ modelURL: URL, settings: inout PanoramaSettings, prompts: [String], encoding: Bool = false,
                      progress: ProgressReporter) throws -> PanoramaPipeline {
        let start = Date()
        let loras = try loraApplications(model: modelURL, prompts: prompts)
        progress.note("loading \(modelURL.path)" + (loras.isEmpty ? "" : " with LoRA " + loras.map {
            $0.textEncoderWeight == $0.unetWeight ? "\($0.name) (\($0.unetWeight))"
                : "\($0.name) (text encoder \($0.textEncoderWeight), UNet \($0.unetWeight))"
        }.joined(separator: ", ")))
        var model = try loadModel(modelURL, loras: loras)
        if let vae { model = try model.replacingVAE(with: URL(fileURLWithPath: (vae as NSString).expandingTildeInPath)) }
        let tiny = try taesd.map { try AutoencoderTiny(contentsOf: URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath)) }
        if let tiny, encoding { try tiny.checkEncoder() }
        var pipeline = PanoramaPipeline(model: model, autoencoder: tiny)
        pipeline.processes = Job.processes
        if let summary = Job.summary { progress.note(summary) }
        settings.embeddingDirectories = try embeddingDirectories(model: modelURL)
        try pipeline.validate(settings)
        let embeddings = try pipeline.embeddingFiles(settings, prompts: [settings.prompt, settings.negativePrompt])
        if !embeddings.isEmpty { progress.note("embeddings: " + embeddings.map(\.name).joined(separator: ", ")) }
        var disk = try pipeline.fitTemporaryFiles(&settings, encoding: encoding)
        // bfloat16 files round the activations: the processes of a job must all use them or none
        if case .tiled(var tiling) = settings.decodeMethod, Job.anyProcess(tiling.fileFormat == .bfloat16) {
            tiling.fileFormat = .bfloat16
            settings.decodeMethod = .tiled(tiling)
            disk = try pipeline.fitTemporaryFiles(&settings, encoding: encoding)
        }
        if case .tiled(let tiling) = settings.decodeMethod, disk > 0, tiling.fileFormat == .bfloat16 {
            progress.note("the VAE's temporary files take \(formatBytes(disk)) as bfloat16 (float32 would not fit the free disk)")
        }
        progress.note(String(format: "model loaded in %.1f s; seed %llu", Date().timeIntervalSince(start), settings.seed))
        if let png = try recalled()?.settings, let recorded = png.modelHash ?? png.model,
           recorded != (png.modelHash == nil ? model.name : (try? FileHash.modelHash(ofModelAt: modelURL)) ?? nil) {
            progress.note("the --from-png picture was made with the model \(png.model ?? "?") (hash \(png.modelHash ?? "?")), not this one: expect another picture")
        }
        return pipeline
    }

    /// The LoRAs of --lora and of the prompts' tags, read and checked.
    private func loraApplications(model: URL, prompts: [String]) throws -> [LoRAApplication] {
        let requests = try lora.map(LoRARequest.init(option:)) + LoRARequest.fromPrompts(prompts)
        guard !requests.isEmpty else { return [] }
        let folders = loraDir.map { [URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath)] }
            ?? LoRALibrary.defaultFolders(model: model, fallback: Resources.defaultModel?
                .deletingLastPathComponent().appendingPathComponent("lora"))
        var unique: [URL] = []
        for folder in folders where !unique.contains(folder.standardizedFileURL) { unique.append(folder.standardizedFileURL) }
        return try LoRARequest.resolve(requests, library: LoRALibrary(folders: unique))
    }

    /// The model at `url` with `loras` merged: a diffusers folder, or a single-file checkpoint
    /// configured by --model-config or read as SD 1.x / 2.x with the bundled model's CLIP tokenizer files.
    private func loadModel(_ url: URL, loras: [LoRAApplication]) throws -> StableDiffusionModel {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        guard exists, !isDirectory.boolValue else {
            guard modelConfig == nil, predictionType == nil else {
                throw ValidationError("--model-config and --prediction-type apply to a single-file --model, not to the folder \(url.path)")
            }
            return try StableDiffusionModel(folder: url, loras: loras)
        }
        if modelConfig != nil && predictionType != nil {
            throw ValidationError("--prediction-type comes from --model-config's scheduler; give one or the other")
        }
        if let predictionType, !["epsilon", "v_prediction"].contains(predictionType) {
            throw ValidationError("unknown --prediction-type \"\(predictionType)\"; available: epsilon, v_prediction")
        }
        let configuration = try checkpointConfiguration(modelConfig: modelConfig, predictionType: predictionType)
        return try withConfigurationHint { try StableDiffusionModel(checkpoint: url, configuration: configuration, loras: loras) }
    }

    /// The sampler named by --scheduler, the --from-png file or the preset.
    func sampler(_ preset: Preset?) throws -> Sampler {
        if scheduler == nil, let sampler = try recalled()?.sampler() { return sampler }
        let name = scheduler ?? preset?.scheduler ?? modelSampler() ?? "ddim"
        guard let sampler = Sampler(rawValue: name.lowercased()) else {
            let names = Sampler.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("unknown scheduler \"\(name)\"; available: \(names)")
        }
        return sampler
    }

    /// The sampler a diffusers folder's scheduler file names when it is one that the model needs:
    /// LCM-distilled models ship an LCMScheduler (and TCD ones a TCDScheduler). Other classes
    /// (PNDM, DDIM, …) leave the choice to the default.
    private func modelSampler() -> String? {
        guard let folder = try? modelLocation(),
              let config = try? DDIMSchedulerConfig.load(from: folder.appendingPathComponent("scheduler/scheduler_config.json"))
        else { return nil }
        switch config.className {
        case "LCMScheduler": return "lcm"
        case "TCDScheduler": return "tcd"
        default: return nil
        }
    }

    /// Settings for a `width` x `height` canvas from these options over the --from-png file's
    /// parameters over `preset`.
    func settings(width: Int, height: Int, circular: Bool, preset: Preset?) throws -> PanoramaSettings {
        let png = try recalled()?.settings
        guard let prompt = prompt ?? png?.prompt else {
            throw ValidationError("missing --prompt (or --from-png FILE.png to take it from a picture's parameters)")
        }
        var s = PanoramaSettings(prompt: prompt, width: width, height: height)
        // A preset's LoRAs join the prompt as A1111 tags: found in the LoRA folders like any tag,
        // and recorded in the PNG's prompt, as A1111 records the LoRAs its settings add.
        for entry in preset?.lora ?? [] where !s.prompt.contains("<lora:\(entry)") {
            s.prompt += "<lora:\(entry)>"
        }
        s.negativePrompt = negativePrompt ?? png?.negativePrompt ?? preset?.negativePrompt ?? ""
        s.steps = steps ?? png?.steps ?? preset?.steps ?? 50
        s.guidanceScale = guidance ?? png?.guidanceScale ?? preset?.guidance ?? 7.5
        s.seed = try seed ?? resumedSeed() ?? png?.seed ?? Job.agreed(UInt64.random(in: 0..<(1 << 32)))
        s.sampler = try sampler(preset)
        // A1111 records an eta for its ancestral samplers too; only DDIM's and TCD's apply here
        s.eta = eta ?? (s.sampler.acceptsEta ? png?.eta : nil) ?? preset?.eta
        s.clipSkip = png?.clipSkip ?? 0
        if let eta = s.eta, eta != 0, !s.sampler.acceptsEta {
            throw ValidationError("--eta applies to the ddim and tcd samplers only, not \(s.sampler.rawValue)")
        }
        s.timestepSpacing = timestepSpacing ?? png?.timestepSpacing ?? preset?.timestepSpacing
        if let spacing = s.timestepSpacing, !Sampler.timestepSpacings.contains(spacing) {
            throw ValidationError("unknown --timestep-spacing \"\(spacing)\"; available: \(Sampler.timestepSpacings.joined(separator: ", "))")
        }
        let fusion = noiseFusion ?? png?.noiseFusion?.rawValue ?? "canvas"
        guard let noiseFusionRule = NoiseFusion(rawValue: fusion) else {
            throw ValidationError("unknown --noise-fusion \"\(fusion)\"; available: \(NoiseFusion.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        s.noiseFusion = noiseFusionRule
        s.stride = stride ?? png?.stride ?? preset?.stride ?? 8
        s.viewBatchSize = viewBatchSize ?? preset?.viewBatchSize ?? 1
        s.circular = circular || png?.circular == true
        // a PNG records only non-uniform weights, so a PNG without the field means uniform
        let weights = windowWeights ?? png?.windowWeighting?.name ?? (png == nil ? preset?.windowWeights : nil) ?? "uniform"
        guard let weighting = WindowWeighting(name: weights) else {
            throw ValidationError("unknown --window-weights \"\(weights)\"; available: uniform, gaussian, gaussian:SIGMA")
        }
        s.windowWeighting = weighting
        // a PNG's SpotDiffusion gives way to an explicit --stride or --window-weights
        if spot || preset?.spot == true || (png?.spotDiffusion == true && stride == nil && windowWeights == nil) {
            // a preset's stride or weights give way; explicit ones are a contradiction
            if stride != nil { throw ValidationError("--stride does not apply with --spot (its windows do not overlap)") }
            if windowWeights != nil { throw ValidationError("--window-weights does not apply with --spot (its windows do not overlap)") }
            s.spotDiffusion = true
            s.windowWeighting = .uniform
        }
        s.emphasis = try emphasisMode(png: png)
        switch decode ?? png?.decode ?? "tiled" {
        case "tiled": s.decodeMethod = .tiled(VAETiling.fromEnvironment())
        case "whole": s.decodeMethod = .whole
        case let other: throw ValidationError("unknown --decode \"\(other)\"; available: tiled, whole")
        }
        return s
    }

    /// The generation parameters in the "parameters" text format of AUTOMATIC1111 (`Infotext`),
    /// which ComfyUI and image browsers also read; `extra` fields follow A1111's standard ones.
    /// `Model hash` is the checkpoint file's (a diffusers folder's: its UNet weights file's);
    /// `Lora hashes` name the model's LoRAs with A1111's short hash of each file.
    /// `TI hashes` name the embeddings that the prompts (and `otherPrompts`, e.g. regions') call.
    func parameters(_ s: PanoramaSettings, model: StableDiffusionModel, extra: [Infotext.Field] = [],
                    otherPrompts: [String] = []) throws -> String {
        let hash = (try? modelLocation()).flatMap { try? FileHash.modelHash(ofModelAt: $0) } ?? nil
        // A1111 names a replacement VAE in `VAE`; a tiny decoder gets its own field
        let tiny = taesd.map { [Infotext.Field("TAESD", URL(fileURLWithPath: $0).lastPathComponent)] } ?? []
        return try PanoramaPipeline(model: model).parameters(
            s, modelHash: hash, vae: vae.map { URL(fileURLWithPath: $0).lastPathComponent }, extra: extra + tiny,
            otherPrompts: otherPrompts, taggedLoRAs: lora.count, precision: Compute.precision.rawValue)
    }

    private func modelLocation() throws -> URL {
        if let model { return URL(fileURLWithPath: (model as NSString).expandingTildeInPath) }
        guard let url = Resources.defaultModel else {
            throw ValidationError("no model: pass --model DIR|FILE (a Stable Diffusion diffusers folder or single-file checkpoint); the bundled model models/\(Resources.defaultModelName) was not found")
        }
        return url
    }

    /// The output path, checked before any work: not an existing file unless --overwrite, and in
    /// a writable folder. Without --output, the first free name `base.png`, `base-2.png`, ….
    func outputLocation(defaultBase base: String) throws -> URL {
        if let output {
            guard output.lowercased().hasSuffix(".png") else {
                throw ValidationError("--output must name a .png file, not \(output)")
            }
            return try checkedWritable(URL(fileURLWithPath: output), replace: overwrite)
        }
        var candidate = URL(fileURLWithPath: "\(base).png")
        var n = 2
        while FileManager.default.fileExists(atPath: candidate.path) {
            candidate = URL(fileURLWithPath: "\(base)-\(n).png")
            n += 1
        }
        return try checkedWritable(candidate, replace: false)
    }

    func checkedWritable(_ url: URL, replace: Bool) throws -> URL {
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

    /// Runs `loop` to the end with progress, hands the final latents to `denoised`, then decodes,
    /// passes the picture through `composite` (inpainting blends it over its input), writes the
    /// PNG with `parameters` and returns the picture.
    @discardableResult
    func finish<L: ResumableProcess>(_ loop: inout L, pipeline: PanoramaPipeline, settings: PanoramaSettings,
                                     progress: inout ProgressReporter, output: URL, parameters: String,
                                     extraText: [(key: String, value: String)] = [], inputs: [Tensor] = [],
                                     composite: (RGBImage) throws -> RGBImage = { $0 },
                                     denoised: (Tensor) throws -> Void = { _ in }) throws -> RGBImage {
        var live: (url: URL, preview: LatentPreview)?
        if let preview, Job.isPrimary {
            let start = Date()
            live = (URL(fileURLWithPath: preview), LatentPreview(for: pipeline))
            if case .linear = live?.preview.method {
                progress.note(String(format: "preview: latent-to-RGB map fitted to the VAE in %.2f s", Date().timeIntervalSince(start)))
            }
        }
        try restoreIfResumed(&loop, identity: identity(settings, parameters: parameters, extraText: extraText, inputs: inputs),
                             progress: progress)
        progress.beginSteps()
        while let report = loop.next() {
            try saveState(loop, report: report)
            var previewed = false
            if let live, (report.index + 1) % (previewEvery ?? 1) == 0 || report.index + 1 == report.count {
                let image = live.preview.image(report.latents, upscale: .bilinear(), circular: settings.circular)
                // PNG.write renames a finished temporary file into place: a viewer never reads half a file
                try PNG.write(RGBImage(width: image.width, height: image.height, pixels: image.pixels), to: live.url)
                previewed = true
            }
            progress.step(report.index + 1, of: report.count, views: report.views, previewed: previewed)
        }
        try denoised(loop.latents)
        progress.note("decoding")
        let journal = vaeJournal(.decode, pipeline: pipeline, settings: settings, progress: progress)
        let decoded = try withJournal(journal, .decode, loop: loop, progress: progress) {
            try pipeline.decode(loop.latents, circular: settings.circular, method: settings.decodeMethod, journal: journal)
        }
        let image = try composite(RGBImage(decoded: decoded))
        if Job.isPrimary { try PNG.write(image, to: output, text: [(key: "parameters", value: parameters)] + extraText) }
        return image
    }
}

/// How a single-file checkpoint is configured: by the diffusers folder `modelConfig`, or read off
/// its shapes as SD 1.x / 2.x with the bundled model's CLIP tokenizer files.
func checkpointConfiguration(modelConfig: String?, predictionType: String?) throws
    -> StableDiffusionModel.CheckpointConfiguration {
    if let modelConfig {
        return .folder(URL(fileURLWithPath: (modelConfig as NSString).expandingTildeInPath))
    }
    guard let tokenizer = Resources.defaultModel?.appendingPathComponent("tokenizer") else {
        throw ValidationError("a single-file --model needs CLIP's tokenizer files, normally taken from the bundled model models/\(Resources.defaultModelName), which was not found; pass --model-config DIR")
    }
    return .standard(tokenizer: tokenizer, predictionType: predictionType)
}

/// Runs `body`, adding the --model-config hint to a checkpoint whose architecture cannot be read.
func withConfigurationHint<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as WeightsError {
        guard case .corruptFile = error else { throw error }
        throw ValidationError("\(error) (--model-config DIR gives a single file the configuration of a diffusers folder)")
    }
}
