import Foundation
import Renderer
import Schedulers

/// A txt2img or img2img request with A1111's field names and defaults
/// (`StableDiffusionTxt2ImgProcessingAPI` / `StableDiffusionImg2ImgProcessingAPI`), plus this
/// program's own fields, which A1111 clients never send:
///
/// - `panorama_circular` (bool): a 360° panorama whose right edge wraps to the left.
/// - `panorama_spot` (bool): SpotDiffusion windows instead of MultiDiffusion's overlapping ones.
/// - `panorama_window_weights` (string): "uniform" (default), "gaussian" or "gaussian:SIGMA".
/// - `panorama_stride` (int): window stride in latent pixels (default 8).
/// - `panorama_timestep_spacing` (string): "leading", "linspace" or "trailing".
/// - `panorama_regions` (list): a prompt per region over `prompt` as the background, as
///   `panorama compose` (see `RegionRequest`).
/// - `panorama_bootstrap_steps` (int): steps with bootstrapping (default: a fifth of the steps; 1
///   with the few-step fixes).
/// - `panorama_few_step` (string): StreamMultiDiffusion's few-step fixes for regions: "auto"
///   (default: below 8 steps), "on" or "off".
///
/// Of `override_settings`, `sd_model_checkpoint` applies (that model for this job, the loaded
/// one back afterwards unless `override_settings_restore_afterwards` is false). Fields A1111 has
/// that do not apply here (`restore_faces`, `tiling`, `subseed`, `hr_*`, other overrides,
/// `script_name`, …) are accepted and ignored, as are unknown fields.
public struct GenerationRequest: Sendable {
    public var prompt = ""
    public var negativePrompt = ""
    public var steps = 50
    public var cfgScale: Double = 7
    public var width = 512
    public var height = 512
    /// -1: random.
    public var seed: Int64 = -1
    public var samplerName = "Euler"
    public var scheduler: String?
    public var nIter = 1
    public var batchSize = 1
    public var eta: Double?
    public var sendImages = true
    // img2img
    public var initImages: [String] = []
    public var mask: String?
    public var denoisingStrength: Double = 0.75
    public var maskBlur: Double = 4
    public var inpaintingMaskInvert = false
    // this program's own
    public var circular = false
    public var spot = false
    public var windowWeights = "uniform"
    public var stride = 8
    public var timestepSpacing: String?
    /// `override_settings.sd_model_checkpoint` and `override_settings_restore_afterwards`.
    public var overrideCheckpoint: String?
    public var restoreSettingsAfterwards = true
    public var regions: [RegionRequest] = []
    public var bootstrapSteps: Int?
    public var fewStep: FewStepMode = .automatic
    /// What the request asked for, as A1111 echoes it in `parameters`.
    public var echo: JSONValue = .object([:])

    /// Reads and validates `body`; a bad field throws a 422 naming it, an unknown sampler A1111's
    /// 404 "Sampler not found". `limits` bounds the size before any work.
    public init(json body: JSONValue, img2img: Bool, limits: SizeLimits) throws {
        var r = try FieldReader(body)
        prompt = r.string("prompt", "") ?? ""
        negativePrompt = r.string("negative_prompt", "") ?? ""
        steps = r.int("steps", 50)
        cfgScale = r.double("cfg_scale", 7) ?? 7
        width = r.int("width", 512)
        height = r.int("height", 512)
        seed = Int64(clamping: r.int("seed", -1))
        let samplerIndex = r.string("sampler_index", nil)
        samplerName = r.string("sampler_name", nil) ?? samplerIndex ?? "Euler"
        scheduler = r.string("scheduler", nil)
        nIter = r.int("n_iter", 1)
        batchSize = r.int("batch_size", 1)
        eta = r.double("eta", nil)
        sendImages = r.bool("send_images", true)
        switch r.object["override_settings"] {
        case nil, .null?: break
        case .object(let overrides)?:
            if var o = try? FieldReader(.object(overrides)) {
                overrideCheckpoint = o.string("sd_model_checkpoint", nil)
                for p in o.problems {
                    r.problems.append(FieldProblem(location: ["body", "override_settings"] + p.location.dropFirst(), message: p.message, type: p.type))
                }
            }
        default: r.check(false, "override_settings", "value is not a valid dict")
        }
        restoreSettingsAfterwards = r.bool("override_settings_restore_afterwards", true)
        _ = r.bool("save_images", false)
        denoisingStrength = r.double("denoising_strength", img2img ? 0.75 : 0) ?? 0
        if img2img {
            initImages = r.strings("init_images")
            mask = r.string("mask", nil)
            maskBlur = Double(r.int("mask_blur", 4))
            inpaintingMaskInvert = r.int("inpainting_mask_invert", 0) != 0
        }
        circular = r.bool("panorama_circular", false)
        spot = r.bool("panorama_spot", false)
        windowWeights = r.string("panorama_window_weights", "uniform") ?? "uniform"
        stride = r.int("panorama_stride", 8)
        timestepSpacing = r.string("panorama_timestep_spacing", nil)
        regions = r.regions("panorama_regions")
        bootstrapSteps = r.object["panorama_bootstrap_steps"].map { _ in r.int("panorama_bootstrap_steps", 0) }
        let fewStepName = r.string("panorama_few_step", "auto") ?? "auto"
        fewStep = FewStepMode(rawValue: fewStepName.lowercased()) ?? .automatic
        r.check(FewStepMode(rawValue: fewStepName.lowercased()) != nil, "panorama_few_step", "panorama_few_step must be auto, on or off")

        r.check(steps >= 1 && steps <= 1000, "steps", "steps must be between 1 and 1000")
        r.check(cfgScale.isFinite && cfgScale >= 0 && cfgScale <= 100, "cfg_scale", "cfg_scale must be between 0 and 100")
        r.check(width >= 8, "width", "width must be at least 8")
        r.check(height >= 8, "height", "height must be at least 8")
        if width >= 8 && height >= 8 {
            r.check(width <= limits.maxSide, "width", "width \(width) exceeds this server's limit of \(limits.maxSide) pixels a side")
            r.check(height <= limits.maxSide, "height", "height \(height) exceeds this server's limit of \(limits.maxSide) pixels a side")
            // Checked for overflow: every check runs, so width and height may be far past maxSide here.
            let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
            r.check(!overflow && pixels <= limits.maxPixels, "width",
                    "\(width)x\(height) is \(overflow ? "more than \(Int.max)" : String(pixels)) pixels, more than this server's limit of \(limits.maxPixels)")
        }
        r.check(seed >= -1, "seed", "seed must be -1 (random) or a whole number from 0 up")
        r.check(nIter >= 1 && nIter <= 100, "n_iter", "n_iter must be between 1 and 100")
        r.check(batchSize >= 1 && batchSize <= 8, "batch_size", "batch_size must be between 1 and 8")
        let (images, imagesOverflow) = nIter.multipliedReportingOverflow(by: batchSize)
        r.check(!imagesOverflow && images <= 100, "n_iter", "n_iter x batch_size must be at most 100 images")
        if let eta { r.check(eta.isFinite && eta >= 0 && eta <= 1, "eta", "eta must be between 0 and 1") }
        r.check(stride >= 1 && stride <= 256, "panorama_stride", "panorama_stride must be between 1 and 256 latent pixels")
        r.check(WindowWeighting(name: windowWeights) != nil, "panorama_window_weights",
                "panorama_window_weights must be uniform, gaussian or gaussian:SIGMA")
        if let spacing = timestepSpacing {
            r.check(Sampler.timestepSpacings.contains(spacing), "panorama_timestep_spacing",
                    "panorama_timestep_spacing must be one of \(Sampler.timestepSpacings.joined(separator: ", "))")
        }
        if let bootstrapSteps {
            r.check(bootstrapSteps >= 0 && bootstrapSteps <= steps, "panorama_bootstrap_steps",
                    "panorama_bootstrap_steps must be between 0 and the \(steps) steps")
        }
        if !regions.isEmpty {
            r.check(!spot, "panorama_spot", "SpotDiffusion windows are not available with panorama_regions")
            r.check(!img2img, "panorama_regions", "panorama_regions apply to txt2img only")
        }
        if img2img {
            r.check(denoisingStrength.isFinite && denoisingStrength > 0 && denoisingStrength <= 1, "denoising_strength",
                    "denoising_strength must be more than 0 and at most 1")
            r.check(!initImages.isEmpty, "init_images", "init_images must hold one base64 image")
            r.check(maskBlur >= 0 && maskBlur <= 256, "mask_blur", "mask_blur must be between 0 and 256 pixels")
        }
        try r.finish()
        echo = body
    }

    /// The prompt, the negative prompt and every region's prompts (LoRA tags and embeddings are
    /// looked for in all of them).
    public var allPrompts: [String] {
        [prompt, negativePrompt] + regions.flatMap { [$0.prompt, $0.negativePrompt] }
    }

    /// The sampler, from A1111's name (and schedule type), or A1111's 404 "Sampler not found".
    public func sampler() throws -> (Sampler, timestepSpacing: String?) {
        try Self.sampler(name: samplerName, scheduler: scheduler, timestepSpacing: timestepSpacing)
    }

    /// Maps A1111's sampler and schedule type names to this program's samplers: "DPM++ 2M" with
    /// "Karras" (or the older "DPM++ 2M Karras"), "Euler" and "Euler a" with "SGM Uniform"
    /// (trailing timesteps), "DDIM", "LCM", "TCD". "Automatic" or no schedule type: the sampler's own.
    public static func sampler(name: String, scheduler: String?, timestepSpacing: String?) throws -> (Sampler, timestepSpacing: String?) {
        guard let base = APICatalog.samplers.first(where: { $0.name == name || $0.aliases.contains(name) })?.sampler else {
            throw APIError.a1111(404, "Sampler not found")
        }
        var sampler = base
        var spacing = timestepSpacing
        let isDPM = base == .dpmSolver2M || base == .dpmSolver2MKarras
        let isEuler = base == .euler || base == .eulerAncestral
        switch scheduler?.lowercased() ?? "automatic" {
        case "automatic", "":
            if name == "DPM++ 2M Karras" { sampler = .dpmSolver2MKarras }
        case "uniform":
            if isDPM { sampler = .dpmSolver2M }
        case "karras" where isDPM:
            sampler = .dpmSolver2MKarras
        case "sgm_uniform" where isEuler, "sgm uniform" where isEuler:
            spacing = "trailing"
        default:
            let available = APICatalog.schedulers.map(\.name).joined(separator: ", ")
            throw APIError.validation(field: "scheduler", "schedule type \(scheduler!) is not available for \(name) here (schedule types: \(available); Karras with DPM++ 2M only, SGM Uniform with Euler and Euler a only)")
        }
        return (sampler, spacing)
    }
}

/// One entry of `panorama_regions`: `{"rect": [x, y, w, h]}` in canvas pixels (fractions of the
/// canvas when all four are at most 1) or `{"mask": base64 image}` (white inside, scaled to the
/// canvas), with `"prompt"` and optionally `"negative_prompt"`, `"guidance"`, `"weight"` (default 1)
/// and `"feather"` (pixels of soft rectangle edge).
public struct RegionRequest: Sendable, Equatable {
    public var rect: [Double]?
    public var mask: String?
    public var prompt: String
    public var negativePrompt = ""
    public var guidance: Double?
    public var weight: Double = 1
    public var feather: Double = 0

    /// The most regions a request may hold (each costs a denoise per window it touches).
    public static let maximumCount = 32
}

extension FieldReader {
    /// `panorama_regions`: every problem is located at its entry and field.
    mutating func regions(_ key: String) -> [RegionRequest] {
        switch object[key] {
        case nil, .null?: return []
        case .array(let items)?:
            guard items.count <= RegionRequest.maximumCount else {
                check(false, key, "at most \(RegionRequest.maximumCount) regions")
                return []
            }
            var result: [RegionRequest] = []
            for (i, item) in items.enumerated() {
                let at = [key, String(i)]
                guard case .object = item, var entry = try? FieldReader(item) else {
                    problems.append(FieldProblem(location: ["body"] + at, message: "value is not a valid dict", type: "type_error.dict"))
                    continue
                }
                var region = RegionRequest(prompt: entry.string("prompt", "") ?? "")
                if let value = entry.object["rect"] {
                    if case .array(let numbers) = value, numbers.count == 4,
                       case let parsed = numbers.compactMap({ if case .number(let n) = $0, n.isFinite { n } else { nil } }), parsed.count == 4 {
                        region.rect = parsed
                    } else {
                        entry.check(false, "rect", "rect must be four numbers [x, y, w, h]")
                    }
                }
                region.mask = entry.string("mask", nil)
                region.negativePrompt = entry.string("negative_prompt", "") ?? ""
                region.guidance = entry.double("guidance", nil)
                region.weight = entry.double("weight", 1) ?? 1
                region.feather = entry.double("feather", 0) ?? 0
                entry.check((region.rect == nil) != (region.mask == nil), "rect", "give exactly one of rect and mask")
                entry.check(!region.prompt.trimmingCharacters(in: .whitespaces).isEmpty, "prompt", "a region needs a prompt")
                entry.check(region.weight.isFinite && region.weight > 0 && region.weight <= 100, "weight", "weight must be more than 0 and at most 100")
                entry.check(region.feather.isFinite && region.feather >= 0 && region.feather <= 4096, "feather", "feather must be between 0 and 4096 pixels")
                if let g = region.guidance { entry.check(g.isFinite && g >= 0 && g <= 100, "guidance", "guidance must be between 0 and 100") }
                for p in entry.problems {
                    problems.append(FieldProblem(location: ["body"] + at + p.location.dropFirst(), message: p.message, type: p.type))
                }
                result.append(region)
            }
            return result
        default:
            check(false, key, "value is not a valid list")
            return []
        }
    }
}

/// The largest canvas a request may ask for.
public struct SizeLimits: Sendable {
    public var maxSide: Int
    public var maxPixels: Int
    public init(maxSide: Int = 16384, maxPixels: Int = 64_000_000) {
        self.maxSide = maxSide
        self.maxPixels = maxPixels
    }
}

/// The fixed lists of the API: samplers and schedule types as A1111 names them.
public enum APICatalog {
    public struct SamplerEntry: Sendable {
        public let name: String
        public let aliases: [String]
        public let sampler: Sampler
    }

    /// A1111's names ("DPM++ 2M Karras" is A1111's older name, kept as an alias).
    public static let samplers: [SamplerEntry] = [
        SamplerEntry(name: "DPM++ 2M", aliases: ["k_dpmpp_2m", "DPM++ 2M Karras"], sampler: .dpmSolver2M),
        SamplerEntry(name: "Euler a", aliases: ["k_euler_a", "k_euler_ancestral"], sampler: .eulerAncestral),
        SamplerEntry(name: "Euler", aliases: ["k_euler"], sampler: .euler),
        SamplerEntry(name: "DDIM", aliases: [], sampler: .ddim),
        SamplerEntry(name: "LCM", aliases: ["k_lcm"], sampler: .lcm),
        SamplerEntry(name: "TCD", aliases: [], sampler: .tcd),
    ]

    /// Schedule types (A1111 1.9+): name, label.
    public static let schedulers: [(name: String, label: String)] = [
        ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("sgm_uniform", "SGM Uniform"),
    ]
}
