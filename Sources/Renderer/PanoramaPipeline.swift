import Foundation
import Models
import Schedulers
import Tensors
import Tokenization
import Weights

/// Everything that determines a panorama, with diffusers' defaults.
public struct PanoramaSettings: Sendable, Equatable {
    public var prompt: String
    public var negativePrompt = ""
    /// Image size in pixels; multiples of 8, at least the model's window (512 for SD 1.x/2.x).
    public var width: Int
    public var height: Int
    public var steps = 50
    public var guidanceScale: Float = 7.5
    public var seed: UInt64 = 0
    /// The sampler (diffusers' default for these pipelines is the model's own scheduler, DDIM here).
    public var sampler: Sampler = .ddim
    /// DDIM's η (0: deterministic) or TCD's γ; nil: the sampler's default (0, TCD 0.3).
    public var eta: Float?
    /// The sampler's timestep spacing ("leading", "linspace" or "trailing"); nil: the model's
    /// scheduler file's, or the sampler's own default. Turbo-style models want "trailing".
    public var timestepSpacing: String?
    /// Distance between neighbouring windows, in latent pixels.
    public var stride = 8
    /// Windows per UNet call.
    public var viewBatchSize = 1
    /// 360° mode: windows and decode wrap around the left/right edge.
    public var circular = false
    /// Use the text encoder's output this many layers before the last.
    public var clipSkip = 0
    /// How prompts are read: AUTOMATIC1111's syntax and long prompts, or diffusers' literal 77 tokens.
    public var emphasis: PromptEmphasis = .a1111
    /// Folders of textual-inversion embeddings, called in prompts by file stem (earlier folders win).
    public var embeddingDirectories: [URL] = []
    /// How the VAE decodes the canvas (tiled by default: same image, bounded memory).
    public var decodeMethod: DecodeMethod = .tiled(VAETiling())
    /// How overlapping windows are averaged (`.uniform` is diffusers' behaviour).
    public var windowWeighting = WindowWeighting.uniform
    /// SpotDiffusion instead of MultiDiffusion: non-overlapping windows moved by a random offset
    /// (drawn from the seed) at every step; `stride` and `windowWeighting` do not apply.
    public var spotDiffusion = false
    /// Where stochastic samplers add their fresh noise: once on the fused canvas (default) or
    /// per window before fusing (diffusers' panorama pipeline; blurs with few steps).
    public var noiseFusion = NoiseFusion.canvas

    public init(prompt: String, width: Int, height: Int) {
        self.prompt = prompt
        self.width = width
        self.height = height
    }

    /// `eta`, or the sampler's default when it is nil.
    public var effectiveEta: Float { eta ?? sampler.defaultEta }
}

/// Errors in the request, before any work starts.
public enum RenderError: Error, CustomStringConvertible, Equatable {
    case invalidSize(String)
    case invalidSetting(String)
    case tooLarge(estimatedBytes: Int, availableBytes: Int, what: String)
    case notEnoughDisk(estimatedBytes: Int, availableBytes: Int, directory: String, what: String)
    case invalidLatents(String)

    public var description: String {
        switch self {
        case .invalidSize(let s), .invalidSetting(let s), .invalidLatents(let s): return s
        case .tooLarge(let need, let have, let what):
            return "\(what) needs about \(formatBytes(need)) of memory, but this machine has \(formatBytes(have)) available"
        case .notEnoughDisk(let need, let have, let directory, let what):
            return "\(what) needs about \(formatBytes(need)) of temporary files (bfloat16) in \(directory), but only "
                + "\(formatBytes(have)) is free there; set TMPDIR to a directory on a larger disk"
        }
    }
}

/// Human-readable byte counts ("3.2 GiB").
public func formatBytes(_ bytes: Int) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) bytes" : String(format: "%.1f %@", value, units[unit])
}

/// Text-to-panorama with MultiDiffusion on one Stable Diffusion model: the pieces the command
/// line (and tests) put together — validation, prompt encoding, seeded latents, the denoising
/// loop and the decode.
public struct PanoramaPipeline: Sendable {
    public let model: StableDiffusionModel
    /// What decodes the final latents and encodes input images: the model's VAE unless replaced,
    /// e.g. by a tiny autoencoder (`AutoencoderTiny`).
    public var autoencoder: any Autoencoder
    /// The processes of a job (an MPI job) that share this pipeline's work: each step's UNet
    /// batches and the tiled VAE's tiles, with results identical to one process. nil: this one.
    public var processes: (any ProcessGroup)?

    public init(model: StableDiffusionModel, autoencoder: (any Autoencoder)? = nil) {
        self.model = model
        self.autoencoder = autoencoder ?? model.vae
    }

    /// Whether the model's own VAE decodes (its memory and temporary files then count).
    var decodesWithModelVAE: Bool { autoencoder is AutoencoderKL }

    /// The VAE's spatial factor (8 for SD).
    public var vaeScale: Int { 1 << (model.vae.config.blockOutChannels.count - 1) }

    /// Latent channels × height × width of the canvas for `settings`.
    public func latentShape(_ settings: PanoramaSettings) -> [Int] {
        [1, model.latentChannels, settings.height / vaeScale, settings.width / vaeScale]
    }

    /// Checks sizes and settings; the message says what is wrong and what would work.
    public func validate(_ settings: PanoramaSettings, availableMemory: Int? = systemAvailableMemory()) throws {
        let window = model.latentWindow * vaeScale
        for (name, value) in [("width", settings.width), ("height", settings.height)] {
            guard value % vaeScale == 0 else {
                let lower = value / vaeScale * vaeScale
                throw RenderError.invalidSize("\(name) \(value) is not a multiple of \(vaeScale); use \(lower) or \(lower + vaeScale)")
            }
            guard value >= window else {
                throw RenderError.invalidSize("\(name) \(value) is smaller than the model's \(window)-pixel window; use at least \(window)")
            }
        }
        guard settings.steps >= 1 && settings.steps <= model.schedulerConfig.numTrainTimesteps else {
            throw RenderError.invalidSetting("steps must be between 1 and \(model.schedulerConfig.numTrainTimesteps), not \(settings.steps)")
        }
        guard settings.stride >= 1 && settings.stride <= model.latentWindow else {
            throw RenderError.invalidSetting("stride must be between 1 and the window, \(model.latentWindow) latent pixels, not \(settings.stride)")
        }
        guard settings.viewBatchSize >= 1 else {
            throw RenderError.invalidSetting("view batch size must be at least 1, not \(settings.viewBatchSize)")
        }
        let eta = settings.effectiveEta
        guard eta >= 0 && eta.isFinite else {
            throw RenderError.invalidSetting("eta must be 0 or more, not \(eta)")
        }
        guard eta == 0 || settings.sampler.acceptsEta else {
            throw RenderError.invalidSetting("eta applies to the DDIM and TCD samplers only, not \(settings.sampler.displayName)")
        }
        guard eta <= 1 || settings.sampler != .tcd else {
            throw RenderError.invalidSetting("TCD's eta (gamma) must be between 0 and 1, not \(eta)")
        }
        guard settings.guidanceScale.isFinite else {
            throw RenderError.invalidSetting("guidance scale must be a finite number")
        }
        guard settings.clipSkip >= 0 && settings.clipSkip < model.textEncoder.config.numHiddenLayers else {
            throw RenderError.invalidSetting("clip skip must be between 0 and \(model.textEncoder.config.numHiddenLayers - 1)")
        }
        if let availableMemory {
            let need = estimatedMemory(settings)
            if need > availableMemory {
                throw RenderError.tooLarge(estimatedBytes: need, availableBytes: availableMemory,
                                           what: "a \(settings.width)x\(settings.height) panorama")
            }
        }
    }

    /// Peak memory of a render beyond the loaded weights: the UNet's activations for one batch of
    /// windows, or the VAE decode, whichever is larger. A whole-image decode's first full-size
    /// resnet holds about eight maps of the output size at the decoder's last width at once; a
    /// tiled decode holds a few tiles, the maps small enough to stay in memory (four at most at
    /// once) and the image.
    public func estimatedMemory(_ settings: PanoramaSettings) -> Int {
        let window = model.latentWindow
        let unetChannels = model.unet.config.blockOutChannels[0]
        let cfg = settings.guidanceScale > 1 && !model.unet.embedsGuidance ? 2 : 1
        let unet = settings.viewBatchSize * cfg * window * window * unetChannels * 4 * 24
        let vae: Int
        switch decodesWithModelVAE ? settings.decodeMethod : .tiled(VAETiling()) {
        case .whole:
            let padding = settings.circular ? 2 * Self.circularDecodePadding * vaeScale : 0
            let pixels = (settings.width + padding) * settings.height
            vae = pixels * model.vae.config.blockOutChannels[0] * 4 * 8
        case .tiled(let tiling):
            let pixels = settings.width * settings.height
            let widest = model.vae.config.blockOutChannels.max() ?? 0
            let largestMap = pixels * widest * 4
            vae = 8 * tiling.tileElements * 4 + (32 << 20) + 4 * min(largestMap, tiling.memoryLimit) + 2 * pixels * 3 * 4
        }
        return max(unet, vae)
    }

    /// Decides where the tiled VAE keeps its full-size maps for `settings`: in memory when all of
    /// them fit in half of `availableMemory` next to the rest of the render (no file traffic: a
    /// 4096x512 decode takes about a quarter less time), else in temporary files that fit the free disk of
    /// their directory — float32 files when they fit, else bfloat16 files (half the disk,
    /// activations rounded to 8 significant bits). `encoding`: an input image is encoded at the
    /// settings' size too. Returns the bytes the files will need at most (0 for `.whole` decodes,
    /// maps in memory or small images); throws `RenderError.notEnoughDisk` when even bfloat16
    /// files do not fit.
    @discardableResult
    public func fitTemporaryFiles(_ settings: inout PanoramaSettings, encoding: Bool = false,
                                  freeDisk: (String) -> Int? = freeDiskSpace,
                                  availableMemory: Int? = systemAvailableMemory()) throws -> Int {
        // a tiny autoencoder decodes in small tiles in memory
        guard decodesWithModelVAE, case .tiled(var tiling) = settings.decodeMethod else { return 0 }
        func need(_ tiling: VAETiling) -> Int {
            let vae = model.vae
            let decode = vae.temporaryFileBytes(height: settings.height, width: settings.width, tiling: tiling, encoding: false)
            let encode = encoding ? vae.temporaryFileBytes(height: settings.height, width: settings.width, tiling: tiling, encoding: true) : 0
            return max(decode, encode)
        }
        if let availableMemory, tiling.memoryLimit < .max {
            var everything = tiling
            (everything.memoryLimit, everything.fileFormat) = (0, .float32)
            if need(everything) + estimatedMemory(settings) <= availableMemory / 2 {
                tiling.memoryLimit = .max
                settings.decodeMethod = .tiled(tiling)
                return 0
            }
        }
        var bytes = need(tiling)
        guard bytes > 0, let free = freeDisk(tiling.temporaryDirectory) else { return bytes }
        // Room for the output file and everything else on that disk.
        let usable = free - max(1 << 30, free / 20)
        if bytes > usable && tiling.fileFormat == .float32 {
            tiling.fileFormat = .bfloat16
            bytes = need(tiling)
            settings.decodeMethod = .tiled(tiling)
        }
        guard bytes <= usable else {
            throw RenderError.notEnoughDisk(estimatedBytes: bytes, availableBytes: free, directory: tiling.temporaryDirectory,
                                            what: "a \(settings.width)x\(settings.height) image")
        }
        return bytes
    }

    /// Latent columns added on each side before a 360° decode, so the image's edges see each other.
    public static let circularDecodePadding = 8

    /// The scheduler for `settings`.
    public func makeScheduler(_ settings: PanoramaSettings) throws -> AnyScheduler {
        try settings.sampler.makeScheduler(config: model.schedulerConfig, steps: settings.steps, eta: settings.effectiveEta,
                                           timestepSpacing: settings.timestepSpacing)
    }

    /// Conditional and unconditional text embeddings.
    public func guidance(_ settings: PanoramaSettings) throws -> Guidance {
        try guidances([settings])[0]
    }

    /// The guidance of each settings' prompt and negative prompt (emphasis, embeddings and clip skip
    /// from the first), all of one token length, as prompts batched into one UNet call must be: each
    /// prompt is padded with empty-prompt chunks to the longest.
    public func guidances(_ list: [PanoramaSettings]) throws -> [Guidance] {
        guard let first = list.first else { return [] }
        // A guidance-embedded UNet takes the scale as an input and runs no unconditional pass, so
        // its negative prompts are not encoded (diffusers ignores them there too).
        let embedded = model.unet.embedsGuidance
        let prompts = list.flatMap { $0.guidanceScale > 1 && !embedded ? [$0.negativePrompt, $0.prompt] : [$0.prompt] }
        let encoded = try promptEncoder(first).encodeEqualLength(prompts)
        var next = 0
        return list.map { s in
            let active = s.guidanceScale > 1 && !embedded
            defer { next += active ? 2 : 1 }
            let conditional = encoded[next + (active ? 1 : 0)].embeddings
            return Guidance(scale: s.guidanceScale, conditional: conditional,
                            unconditional: active ? encoded[next].embeddings : conditional, embedded: embedded)
        }
    }

    /// The prompt encoder for `settings`' emphasis, embedding folders and clip skip.
    public func promptEncoder(_ settings: PanoramaSettings) -> PromptEncoder {
        PromptEncoder(model: model, emphasis: settings.emphasis,
                      embeddings: TextualInversionLibrary(directories: settings.embeddingDirectories),
                      clipSkip: settings.clipSkip)
    }

    /// The textual-inversion embedding files `prompts` call (for the PNG's `TI hashes`), each once,
    /// in order of first use; the files are loaded and checked, nothing is encoded.
    public func embeddingFiles(_ settings: PanoramaSettings, prompts: [String]) throws -> [(name: String, url: URL)] {
        let encoder = promptEncoder(settings)
        var seen = Set<String>(), files: [(name: String, url: URL)] = []
        for prompt in prompts {
            let (parsed, loaded) = try encoder.parse(prompt)
            for name in parsed.embeddingsUsed where seen.insert(name).inserted { files.append((name, loaded[name]!.url)) }
        }
        return files
    }

    /// Starting latents from the seed (torch.randn with `Generator().manual_seed(seed)`), and the
    /// generator in the state the denoising loop continues from.
    public func seededLatents(_ settings: PanoramaSettings, initNoiseSigma: Float = 1) -> (Tensor, TorchGenerator) {
        var generator = TorchGenerator(seed: settings.seed)
        let latents = generator.randn(latentShape(settings))
        return (initNoiseSigma == 1 ? latents : latents * initNoiseSigma, generator)
    }

    /// Checks user-supplied starting latents against the canvas.
    public func checkLatents(_ latents: Tensor, for settings: PanoramaSettings) throws {
        let expected = latentShape(settings)
        guard latents.shape == expected else {
            throw RenderError.invalidLatents("the latents have shape \(latents.shape) but a \(settings.width)x\(settings.height) canvas needs \(expected)")
        }
    }

    /// The denoising loop from `latents` (nil: from the seed). An inpainting model gets the
    /// conditioning of "nothing known" (`nothingKnownConditioning`), so it renders from text too.
    public func denoisingLoop(_ settings: PanoramaSettings, latents: Tensor? = nil) throws -> DenoisingLoop<AnyScheduler> {
        let scheduler = try makeScheduler(settings)
        var start: Tensor, generator: TorchGenerator
        if let latents {
            try checkLatents(latents, for: settings)
            start = latents * scheduler.initNoiseSigma
            generator = TorchGenerator(seed: settings.seed)
        } else {
            (start, generator) = seededLatents(settings, initNoiseSigma: scheduler.initNoiseSigma)
        }
        return try makeLoop(settings, scheduler: scheduler, start: start, generator: generator)
    }

    /// The loop over the canvas from `start` (already noised to step `firstStep`) with the
    /// settings' windows, weights and noise rule. `conditioning`: an inpainting UNet's mask and
    /// masked-image latents; nil gives such a UNet "nothing known" (`nothingKnownConditioning`).
    func makeLoop(_ settings: PanoramaSettings, scheduler: AnyScheduler, start: Tensor, generator: TorchGenerator,
                  firstStep: Int = 0, conditioning: Tensor? = nil) throws -> DenoisingLoop<AnyScheduler> {
        var loop = DenoisingLoop(unet: model.unet, scheduler: scheduler, guidance: try guidance(settings),
                                 latents: start,
                                 tiler: ViewTiler(window: model.latentWindow, stride: settings.stride,
                                                  circular: settings.circular),
                                 viewBatchSize: settings.viewBatchSize, generator: generator, firstStep: firstStep,
                                 shiftSeed: settings.spotDiffusion ? settings.seed : nil,
                                 noiseFusion: settings.noiseFusion)
        loop.weightWindows(settings.windowWeighting)
        loop.distributor = distributor
        if model.isInpainting { loop.conditioning = try conditioning ?? nothingKnownConditioning(settings) }
        return loop
    }

    /// Decodes final latents to an image [1, 3, H, W] in [-1, 1] with the pipeline's autoencoder
    /// (see `AutoencoderKL.decode(_:circular:method:)` for the model's VAE); a tiled pass of the
    /// model's VAE is resumable through `journal`.
    public func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod = .tiled(VAETiling()),
                       journal: TiledPassJournal? = nil) throws -> Tensor {
        try autoencoder.decode(latents, circular: circular, method: method.shared(by: processes), journal: journal)
    }

    /// The most bytes a journaled tiled pass of the model's VAE keeps in its journal's directory
    /// for `settings` (`encoding`: the encode of an input image; see
    /// `AutoencoderKL.temporaryFileBytes(height:width:tiling:encoding:journaled:)`); 0 when the
    /// pipeline's autoencoder, decode method or picture size makes no tiled pass.
    public func journalBytes(_ settings: PanoramaSettings, encoding: Bool) -> Int {
        guard decodesWithModelVAE, case .tiled(var tiling) = settings.decodeMethod else { return 0 }
        // small pictures decode in one whole-image pass (see `AutoencoderKL.decode(_:circular:method:)`)
        if !encoding && !settings.circular && settings.width * settings.height <= tiling.wholeImagePixels { return 0 }
        tiling.circular = settings.circular
        return model.vae.temporaryFileBytes(height: settings.height, width: settings.width, tiling: tiling, encoding: encoding,
                                            journaled: true)
    }

    /// Who runs the denoising loops' UNet batches.
    var distributor: any WorkDistributor {
        processes.map { GroupDistributor(world: $0) } ?? LocalDistributor()
    }
}

/// How the VAE decodes a canvas (see `PanoramaPipeline.decode`).
public enum DecodeMethod: Sendable, Equatable {
    case tiled(VAETiling)
    case whole

    /// The method with its tiles shared by `processes` (the whole-image pass runs in every process).
    func shared(by processes: (any ProcessGroup)?) -> DecodeMethod {
        guard case .tiled(var tiling) = self, let processes else { return self }
        tiling.processes = processes
        return .tiled(tiling)
    }
}

/// Bytes free for an unprivileged user on the file system holding `directory`, or nil where unknown.
public func freeDiskSpace(_ directory: String) -> Int? {
    var info = statvfs()
    guard statvfs(directory, &info) == 0 else { return nil }
    return Int(info.f_bavail) * Int(info.f_frsize)
}

/// Memory the kernel reports as available (MemAvailable), or nil where unknown.
public func systemAvailableMemory() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
        let parts = line.split(separator: " ")
        if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
    }
    return nil
}
