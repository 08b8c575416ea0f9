import Foundation
import Models
import Schedulers
import Tensors

/// Where a region prompt applies, in image pixels.
public enum RegionShape: Sendable, Equatable {
    /// A rectangle; with `feather` > 0 its weight rises linearly from 0 at the edge to 1 at
    /// `feather` pixels inside (a soft edge; edges on the canvas border stay hard), otherwise it
    /// is 1 inside and 0 outside.
    case rectangle(x: Double, y: Double, width: Double, height: Double, feather: Double = 0)
    /// A mask of the canvas's size, row-major values in [0, 1]; thresholded at 0.5.
    case mask(width: Int, height: Int, values: [Float])
}

/// One prompt of a composition and how it is guided and weighted.
public struct RegionPrompt: Sendable, Equatable {
    public var prompt: String
    public var negativePrompt: String
    /// Classifier-free guidance scale (nil: the composition's).
    public var guidanceScale: Float?
    /// Multiplies the region's mask when windows are fused.
    public var weight: Float

    public init(prompt: String, negativePrompt: String = "", guidanceScale: Float? = nil, weight: Float = 1) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.guidanceScale = guidanceScale
        self.weight = weight
    }
}

/// A foreground region: a shape and its prompt.
public struct Region: Sendable, Equatable {
    public var shape: RegionShape
    public var prompt: RegionPrompt

    public init(shape: RegionShape, prompt: RegionPrompt) {
        self.shape = shape
        self.prompt = prompt
    }
}

extension RegionShape {
    /// The mask at latent resolution ([rows · columns], row-major): each latent pixel takes the
    /// value at its block's centre pixel (what nearest-neighbour downscaling gives), and masks
    /// are thresholded at 0.5.
    public func latentMask(rows: Int, columns: Int, scale: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * columns)
        for i in 0..<rows {
            for j in 0..<columns {
                let py = i * scale + scale / 2, px = j * scale + scale / 2
                switch self {
                case let .rectangle(x, y, w, h, feather):
                    let (cx, cy) = (Double(px), Double(py))
                    guard cx >= x && cx < x + w && cy >= y && cy < y + h else { continue }
                    if feather > 0 {
                        // Edges on the canvas border stay hard: nothing lies beyond them to blend with.
                        let (width, height) = (Double(columns * scale), Double(rows * scale))
                        let inside = min(x > 0 ? cx - x + 0.5 : .infinity, x + w < width ? x + w - cx - 0.5 : .infinity,
                                         y > 0 ? cy - y + 0.5 : .infinity, y + h < height ? y + h - cy - 0.5 : .infinity)
                        out[i * columns + j] = Float(min(1, max(0, inside / feather)))
                    } else {
                        out[i * columns + j] = 1
                    }
                case let .mask(width, _, values):
                    out[i * columns + j] = values[py * width + px] >= 0.5 ? 1 : 0
                }
            }
        }
        return out
    }
}

/// MultiDiffusion's region-based generation, one step per `next()`.
///
/// Prompt 0 is the background (mask 1 − Σ foreground masks, clipped at 0), then one prompt per
/// region. At every step each window is denoised once for each prompt whose mask touches it —
/// a window inside one region costs one denoise — and each result is fused with that prompt's
/// mask times its weight as the per-pixel weight. During the first `bootstrapSteps` steps a
/// foreground prompt's window sees, outside its mask, a constant-colour background latent noised
/// to the current timestep, so that its object forms inside the mask.
///
/// Stochastic samplers add their fresh noise as `noiseFusion` says: with `.canvas` the prompts'
/// and windows' noise-free means are fused and one canvas-wide noise is added per step; with
/// `.perWindow` every (window, prompt) step draws its own, as diffusers' pipelines do.
///
/// With StreamMultiDiffusion's few-step fixes (`FewStepRegions`) the masks may change from step to
/// step (`stepMasks`) and bootstrapped windows are rolled so their region sits at the centre.
public struct RegionDenoisingLoop<S: Scheduler>: DenoisingProcess, Sequence {
    public private(set) var latents: Tensor
    public let views: [LatentView]
    /// For each view, the prompts it is denoised with at the first step (0: background, k: region k).
    public var promptsPerView: [[Int]] { layouts[0].promptsPerView }
    /// Latent masks per prompt, [rows · columns], as given (before any quantization).
    public let masks: [[Float]]
    private let layouts: [Layout]
    /// Per step the index in `layouts`.
    private let layoutOfStep: [Int]
    private let unet: UNet2DConditionModel
    private let scheduler: S
    private let guidances: [Guidance]
    private let weights: [Float]
    private let viewBatchSize: Int
    /// The bootstrapping inputs (nil: none).
    public let bootstrap: Bootstrap?
    /// Roll bootstrapped windows so the mask's bounding box is centred (StreamMultiDiffusion).
    public let centredBootstrap: Bool
    /// Where a stochastic step's fresh noise is added (before or after fusing).
    public let noiseFusion: NoiseFusion
    /// Who runs each step's UNet batches (this process unless spread over an MPI job).
    public var distributor: any WorkDistributor = LocalDistributor()
    /// Scheduler state per view and prompt (every prompt, so it survives steps a prompt skips).
    private var states: [[S.ViewState]]
    private var generator: TorchGenerator
    private var stepIndex = 0

    /// The masks of one or more steps and what they imply per view: which prompts a view is
    /// denoised with, the mask under the view and the fusion weight (mask × prompt weight ×
    /// window weight), computed once.
    private struct Layout {
        var masks: [[Float]]
        var promptsPerView: [[Int]]
        var viewMasks: [[[Float]]]
        var fusionWeights: [[[Float]]]
    }

    /// Bootstrapping inputs: the background latent (one value per channel) for each bootstrap step
    /// and foreground prompt, and the noise that takes it to each step's timestep.
    public struct Bootstrap: Sendable {
        public var steps: Int
        /// [step][foreground] → C values.
        public var backgrounds: [[[Float]]]
        /// Canvas-shaped noise [1, C, h, w].
        public var noise: Tensor

        public init(steps: Int, backgrounds: [[[Float]]], noise: Tensor) {
            self.steps = steps
            self.backgrounds = backgrounds
            self.noise = noise
        }
    }

    /// - Parameters:
    ///   - guidances: per prompt (background first) its embeddings and scale.
    ///   - foregroundMasks: per region its latent mask [rows · columns]; the background's is
    ///     derived from them.
    ///   - stepMasks: per step the regions' masks to use instead of `foregroundMasks` (quantized
    ///     masks, see `FewStepRegions`); nil: `foregroundMasks` at every step.
    ///   - weights: per prompt (background first) the factor on its mask when fusing.
    ///   - windowWeighting: a per-window factor on every mask as well (`.uniform`: none).
    ///   - centredBootstrap: roll bootstrapped windows so the region is at their centre.
    ///   - noiseFusion: where stochastic steps add their noise.
    public init(unet: UNet2DConditionModel, scheduler: S, guidances: [Guidance], foregroundMasks: [[Float]],
                stepMasks: [[[Float]]]? = nil, weights: [Float], latents: Tensor, tiler: ViewTiler,
                viewBatchSize: Int = 1, bootstrap: Bootstrap?, centredBootstrap: Bool = false,
                generator: TorchGenerator, windowWeighting: WindowWeighting = .uniform,
                noiseFusion: NoiseFusion = .canvas) {
        let (rows, columns) = (latents.shape[2], latents.shape[3])
        precondition(guidances.count == foregroundMasks.count + 1 && weights.count == guidances.count)
        precondition(foregroundMasks.allSatisfy { $0.count == rows * columns })
        precondition(viewBatchSize >= 1, "viewBatchSize must be at least 1")
        if let stepMasks {
            precondition(stepMasks.count == scheduler.timesteps.count, "one set of masks per step")
            precondition(stepMasks.allSatisfy { $0.count == foregroundMasks.count && $0.allSatisfy { $0.count == rows * columns } })
        }
        func withBackground(_ foreground: [[Float]]) -> [[Float]] {
            var background = [Float](repeating: 1, count: rows * columns)
            for mask in foreground {
                for i in background.indices { background[i] -= mask[i] }
            }
            for i in background.indices { background[i] = Swift.max(0, background[i]) }
            return [background] + foreground
        }
        masks = withBackground(foregroundMasks)
        self.unet = unet
        self.scheduler = scheduler
        self.guidances = guidances
        self.weights = weights
        self.latents = latents
        self.viewBatchSize = viewBatchSize
        self.bootstrap = bootstrap
        self.centredBootstrap = centredBootstrap
        self.noiseFusion = noiseFusion
        self.generator = generator
        let views = tiler.views(height: rows, width: columns)
        self.views = views
        let windowWeights = windowWeighting.weights(for: views)
        func layout(_ masks: [[Float]]) -> Layout {
            let windows = views.map { view in masks.map { Self.window(of: $0, view, columns: columns) } }
            let promptsPerView = windows.map { perPrompt in perPrompt.indices.filter { perPrompt[$0].contains { $0 > 0 } } }
            let viewMasks = zip(windows, promptsPerView).map { perPrompt, prompts in prompts.map { perPrompt[$0] } }
            let fusionWeights = zip(zip(viewMasks, promptsPerView), windowWeights).map { pair, window in
                let (maskList, prompts) = pair
                return zip(maskList, prompts).map { mask, k in
                    mask.indices.map { i in mask[i] * weights[k] * (window?[i] ?? 1) }
                }
            }
            return Layout(masks: masks, promptsPerView: promptsPerView, viewMasks: viewMasks, fusionWeights: fusionWeights)
        }
        if let stepMasks {
            // Consecutive steps with the same masks share one layout.
            var layouts: [Layout] = [], layoutOfStep: [Int] = []
            var previous: [[Float]]?
            for foreground in stepMasks {
                if foreground != previous {
                    layouts.append(layout(withBackground(foreground)))
                    previous = foreground
                }
                layoutOfStep.append(layouts.count - 1)
            }
            self.layouts = layouts
            self.layoutOfStep = layoutOfStep
        } else {
            layouts = [layout(masks)]
            layoutOfStep = Array(repeating: 0, count: scheduler.timesteps.count)
        }
        states = views.map { _ in guidances.map { _ in scheduler.makeViewState() } }
    }

    /// UNet evaluations (before classifier-free guidance doubles them) per step; with masks that
    /// change from step to step, the most of any step.
    public var denoisesPerStep: Int {
        layouts.map { $0.promptsPerView.reduce(0) { $0 + $1.count } }.max() ?? 0
    }
    public var stepCount: Int { scheduler.timesteps.count }

    /// The prompts' masks (background first) at step `index`, after any quantization.
    public func masks(atStep index: Int) -> [[Float]] { layouts[layoutOfStep[index]].masks }
    /// For each view, the prompts it is denoised with at step `index`.
    public func promptsPerView(atStep index: Int) -> [[Int]] { layouts[layoutOfStep[index]].promptsPerView }

    /// The part of a canvas mask under `view` ([view.height · view.width]), wrapping columns.
    static func window(of mask: [Float], _ view: LatentView, columns: Int) -> [Float] {
        var out = [Float](repeating: 0, count: view.height * view.width)
        for y in 0..<view.height {
            for x in 0..<view.width { out[y * view.width + x] = mask[(view.row + y) * columns + (view.column + x) % columns] }
        }
        return out
    }

    /// The loop's position after its last completed step, for a resumable render's state.
    public func checkpoint() -> LoopCheckpoint {
        var c = LoopCheckpoint(stepIndex: stepIndex, latents: latents, generator: generator.position)
        for (v, perPrompt) in states.enumerated() {
            for (k, state) in perPrompt.enumerated() { c.addView("view\(v).\(k)", scheduler.checkpoint(of: state)) }
        }
        return c
    }

    /// Continues from `checkpoint` (taken of a loop with the same settings); every shape and index
    /// is checked against this loop first, and nothing changes when one is wrong.
    public mutating func restore(_ checkpoint: LoopCheckpoint) throws {
        let count = scheduler.timesteps.count
        try checkpoint.check(latentsShape: latents.shape, steps: 0...count)
        let names = Set(states.indices.flatMap { v in states[v].indices.map { "view\(v).\($0)" } })
        try checkpoint.checkNames(tensors: names, numbers: names)
        var restored = states
        for v in states.indices {
            for k in states[v].indices {
                let (h, i) = try checkpoint.view("view\(v).\(k)", shape: [1, latents.shape[1], views[v].height, views[v].width],
                                                 steps: count)
                restored[v][k] = scheduler.restoredViewState(history: h, index: i)
            }
        }
        states = restored
        latents = checkpoint.latents
        generator = checkpoint.restoredGenerator
        stepIndex = checkpoint.stepIndex
    }

    public mutating func next() -> StepReport? {
        guard stepIndex < scheduler.timesteps.count else { return nil }
        let t = scheduler.timesteps[stepIndex]
        let layout = layouts[layoutOfStep[stepIndex]]
        let (channels, rows, columns) = (latents.shape[1], latents.shape[2], latents.shape[3])
        let canvasNoise = noiseFusion == .canvas && scheduler.needsNoise
        let drawsNoise = scheduler.drawsNoise(at: t)
        var noiseScale: Float = 0
        var fuser = Fuser(channels: channels, height: rows, width: columns)
        // Every batch's inputs first (no randomness), then the UNet batches, which may run on
        // other processes, then the steps in order, drawing noise as one process would.
        typealias Item = (sample: Tensor, guidance: Guidance)
        var work: [(items: [Item], inputs: [Item], owners: [(view: Int, slot: Int, roll: (rows: Int, columns: Int))])] = []
        for start in Swift.stride(from: 0, to: views.count, by: viewBatchSize) {
            let batch = start..<Swift.min(views.count, start + viewBatchSize)
            var items: [Item] = [], inputs: [Item] = []
            var owners: [(view: Int, slot: Int, roll: (rows: Int, columns: Int))] = []
            for v in batch {
                let window = latents.crop(views[v])
                for (slot, k) in layout.promptsPerView[v].enumerated() {
                    var sample = window, roll = (rows: 0, columns: 0)
                    if let bootstrap, k > 0, stepIndex < bootstrap.steps {
                        let mask = layout.viewMasks[v][slot]
                        sample = bootstrapped(window, view: views[v], prompt: k, mask: mask, timestep: t, bootstrap)
                        if centredBootstrap {
                            roll = FewStepRegions.centringRoll(mask: mask, height: views[v].height, width: views[v].width)
                        }
                    }
                    items.append((sample, guidances[k]))
                    inputs.append((sample.rolled(rows: roll.rows, columns: roll.columns), guidances[k]))
                    owners.append((v, slot, roll))
                }
            }
            work.append((items, inputs, owners))
        }
        let model = (unet: unet, scheduler: scheduler)  // copied: the UNet batches may not capture the loop
        distributor.distribute(costs: work.map { $0.inputs.reduce(0) { $0 + ($1.guidance.isActive ? 2 : 1) } }, {
            guidedNoise(unet: model.unet, scheduler: model.scheduler, items: work[$0].inputs, timestep: t)
        }, use: { b, eps in
            let (items, _, owners) = work[b]
            let noise = !canvasNoise && drawsNoise
                ? generator.randn([items.count, channels, views[0].height, views[0].width]) : nil
            for (i, owner) in owners.enumerated() {
                let (v, slot, roll) = owner
                let k = layout.promptsPerView[v][slot]
                // The prediction rolled back under the window the step continues from.
                let prediction = eps[i].rolled(rows: -roll.rows, columns: -roll.columns)
                let stepped: Tensor
                if canvasNoise {
                    (stepped, noiseScale) = scheduler.stepMean(prediction, timestep: t, sample: items[i].sample,
                                                               state: &states[v][k])
                } else {
                    stepped = scheduler.step(prediction, timestep: t, sample: items[i].sample,
                                             state: &states[v][k], noise: noise?.batch(i))
                }
                fuser.add(stepped, at: views[v], weight: layout.fusionWeights[v][slot])
            }
        })
        latents = fuser.fused()
        if canvasNoise && drawsNoise {
            latents = latents.addingNoise(generator.randn(latents.shape), scale: noiseScale)
        }
        stepIndex += 1
        return StepReport(index: stepIndex - 1, count: stepCount, timestep: t, views: views.count, latents: latents)
    }

    /// The window with everything outside prompt `k`'s mask replaced by its bootstrap background,
    /// noised to `t`: x·m + noised(bg)·(1 − m).
    private func bootstrapped(_ window: Tensor, view: LatentView, prompt k: Int, mask: [Float], timestep t: Int,
                              _ bootstrap: Bootstrap) -> Tensor {
        let value = bootstrap.backgrounds[stepIndex][k - 1]
        let plane = view.height * view.width
        var background = Tensor(zeros: window.shape)
        background.withUnsafeMutableBufferPointer { p in
            for c in value.indices { for i in 0..<plane { p[c * plane + i] = value[c] } }
        }
        let noised = scheduler.addNoise(background, noise: bootstrap.noise.crop(view), timestep: t)
        var out = window
        out.withUnsafeMutableBufferPointer { o in
            noised.withUnsafeBufferPointer { n in
                for c in value.indices {
                    for i in 0..<plane { o[c * plane + i] = o[c * plane + i] * mask[i] + n[c * plane + i] * (1 - mask[i]) }
                }
            }
        }
        return out
    }
}

/// A region composition: the regions over the background prompt of the settings.
public struct Composition: Sendable, Equatable {
    public var regions: [Region]
    /// Steps at the start with bootstrapping (0: none).
    public var bootstrapSteps: Int
    /// Whether StreamMultiDiffusion's few-step fixes apply (`.automatic`: below
    /// `FewStepRegions.automaticBelowSteps` steps).
    public var fewStepMode: FewStepMode
    /// The few-step fixes' settings, used when `fewStepMode` turns them on.
    public var fewStep: FewStepRegions

    public init(regions: [Region], bootstrapSteps: Int, fewStepMode: FewStepMode = .automatic,
                fewStep: FewStepRegions = FewStepRegions()) {
        self.regions = regions
        self.bootstrapSteps = bootstrapSteps
        self.fewStepMode = fewStepMode
        self.fewStep = fewStep
    }
}

extension Composition {
    /// Bootstrapped steps when none are asked for: StreamMultiDiffusion bootstraps one step,
    /// MultiDiffusion a fifth of them.
    public static func defaultBootstrapSteps(steps: Int, fewStep: Bool) -> Int {
        fewStep ? min(1, steps - 1) : Int((Double(steps) * 0.2).rounded())
    }

    /// The PNG parameters fields that describe the composition beyond its prompts (the few-step
    /// fields only when the fixes apply to `steps`).
    public func infotextFields(steps: Int) -> [Infotext.Field] {
        var fields = [Infotext.Field("Regions", String(regions.count)),
                      Infotext.Field("Bootstrap steps", String(bootstrapSteps))]
        if usesFewStep(steps: steps) {
            fields += [Infotext.Field("Few-step regions", "on"),
                       Infotext.Field("Mask std", String(fewStep.maskStd)),
                       Infotext.Field("Bootstrap background", fewStep.bootstrapBackground.rawValue)]
            if !fewStep.centredBootstrap { fields.append(Infotext.Field("Centred bootstrap", "off")) }
        }
        return fields
    }
}

extension PanoramaPipeline {
    /// Side of the constant-colour image encoded for a bootstrap background; its centre latent
    /// pixel is the background (a larger image gives the same value there, at more cost).
    static let bootstrapImageSize = 128
    /// The largest mask blur `validate` accepts, in pixels.
    public static let maximumMaskStd = 256.0

    /// Checks a composition against the canvas; messages name the region (1-based).
    public func validate(_ composition: Composition, for settings: PanoramaSettings) throws {
        guard !composition.regions.isEmpty else { throw RenderError.invalidSetting("a composition needs at least one region") }
        guard composition.bootstrapSteps >= 0 && composition.bootstrapSteps <= settings.steps else {
            throw RenderError.invalidSetting("bootstrap steps must be between 0 and the \(settings.steps) steps, not \(composition.bootstrapSteps)")
        }
        let std = composition.fewStep.maskStd
        guard std.isFinite && std >= 0 && std <= Self.maximumMaskStd else {
            throw RenderError.invalidSetting("mask std must be between 0 and \(Int(Self.maximumMaskStd)) pixels, not \(std)")
        }
        let (rows, columns) = (settings.height / vaeScale, settings.width / vaeScale)
        for (n, region) in composition.regions.enumerated() {
            let name = "region \(n + 1)"
            guard !region.prompt.prompt.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw RenderError.invalidSetting("\(name) has an empty prompt")
            }
            guard region.prompt.weight.isFinite && region.prompt.weight > 0 else {
                throw RenderError.invalidSetting("\(name): weight must be more than 0, not \(region.prompt.weight)")
            }
            if let g = region.prompt.guidanceScale, !g.isFinite {
                throw RenderError.invalidSetting("\(name): guidance must be a finite number")
            }
            switch region.shape {
            case let .rectangle(x, y, w, h, feather):
                guard w > 0 && h > 0 else { throw RenderError.invalidSetting("\(name) has zero area (\(w)x\(h))") }
                guard x >= 0 && y >= 0 && x + w <= Double(settings.width) && y + h <= Double(settings.height) else {
                    throw RenderError.invalidSetting("\(name) (\(x), \(y), \(w)x\(h)) reaches outside the \(settings.width)x\(settings.height) canvas")
                }
                guard feather >= 0 && feather.isFinite else { throw RenderError.invalidSetting("\(name): feather must be 0 or more") }
            case let .mask(w, h, values):
                guard w == settings.width && h == settings.height && values.count == w * h else {
                    throw RenderError.invalidSetting("\(name): the mask is \(w)x\(h) but the canvas is \(settings.width)x\(settings.height)")
                }
            }
            guard region.shape.latentMask(rows: rows, columns: columns, scale: vaeScale).contains(where: { $0 > 0 }) else {
                throw RenderError.invalidSetting("\(name) covers no part of the canvas at latent resolution (8x8-pixel blocks)")
            }
        }
    }

    /// The region-based denoising loop for `composition` (regions over the settings' prompt as
    /// background). Random numbers come from the seed's generator in this order: the starting
    /// latents (unless given), then with bootstrapping the background colours
    /// (`rand([bootstrapSteps, regions, 3])`, unless the few-step fixes bootstrap on white) and the
    /// bootstrap noise (`randn` of the canvas), then any noise of stochastic steps
    /// (`settings.noiseFusion`).
    ///
    /// With the few-step fixes on (`Composition.usesFewStep(steps:)`), masks are quantized per step
    /// by the schedule's noise levels and bootstrapped windows centred on their region (see
    /// `FewStepRegions`).
    public func regionLoop(_ settings: PanoramaSettings, composition: Composition,
                           latents given: Tensor? = nil) throws -> RegionDenoisingLoop<AnyScheduler> {
        // the region loop has no mask channels to give an inpainting UNet
        guard !model.isInpainting else {
            throw RenderError.invalidSetting("region prompts are not supported with an inpainting model")
        }
        guard !settings.spotDiffusion else {
            throw RenderError.invalidSetting("SpotDiffusion windows are not available for region compositions")
        }
        try validate(composition, for: settings)
        let scheduler = try makeScheduler(settings)
        let (rows, columns) = (settings.height / vaeScale, settings.width / vaeScale)
        var generator = TorchGenerator(seed: settings.seed)
        var latents: Tensor
        if let given {
            try checkLatents(given, for: settings)
            latents = given
        } else {
            latents = generator.randn(latentShape(settings))
        }
        latents = latents * scheduler.initNoiseSigma

        // Windows of different prompts share UNet calls, so all prompts are encoded to one length.
        let guidances = try self.guidances([settings] + composition.regions.map { region in
            var s = settings
            s.prompt = region.prompt.prompt
            s.negativePrompt = region.prompt.negativePrompt
            s.guidanceScale = region.prompt.guidanceScale ?? settings.guidanceScale
            return s
        })
        let fewStep = composition.usesFewStep(steps: settings.steps) ? composition.fewStep : nil
        var bootstrap: RegionDenoisingLoop<AnyScheduler>.Bootstrap?
        if composition.bootstrapSteps > 0 {
            let (steps, count) = (composition.bootstrapSteps, composition.regions.count)
            let backgrounds: [[[Float]]]
            if fewStep?.bootstrapBackground == .white {
                let white = try bootstrapBackground([1, 1, 1])
                backgrounds = Array(repeating: Array(repeating: white, count: count), count: steps)
            } else {
                let colours = generator.rand([steps, count, 3])
                backgrounds = try (0..<steps).map { step in
                    try (0..<count).map { k in
                        let base = (step * count + k) * 3
                        return try bootstrapBackground(Array(colours.data[base..<(base + 3)]))
                    }
                }
            }
            let noise = generator.randn(latentShape(settings))
            bootstrap = .init(steps: steps, backgrounds: backgrounds, noise: noise)
        }
        let masks = composition.regions.map { $0.shape.latentMask(rows: rows, columns: columns, scale: vaeScale) }
        var stepMasks: [[[Float]]]?
        if let fewStep, fewStep.maskStd > 0 {
            let levels = FewStepRegions.noiseLevels(alphasCumprod: try NoiseSchedule(config: model.schedulerConfig).alphasCumprod,
                                                    timesteps: scheduler.timesteps)
            stepMasks = FewStepRegions.quantizedMasks(masks, rows: rows, columns: columns,
                                                      sigma: fewStep.maskStd / Double(vaeScale), levels: levels,
                                                      circular: settings.circular)
        }
        var loop = RegionDenoisingLoop(unet: model.unet, scheduler: scheduler, guidances: guidances, foregroundMasks: masks,
                                       stepMasks: stepMasks, weights: [1] + composition.regions.map(\.prompt.weight),
                                       latents: latents,
                                       tiler: ViewTiler(window: model.latentWindow, stride: settings.stride,
                                                        circular: settings.circular),
                                       viewBatchSize: settings.viewBatchSize, bootstrap: bootstrap,
                                       centredBootstrap: fewStep?.centredBootstrap ?? false, generator: generator,
                                       windowWeighting: settings.windowWeighting, noiseFusion: settings.noiseFusion)
        loop.distributor = distributor
        return loop
    }

    /// The scaled latent of a constant colour (RGB in [0, 1]): the centre latent pixel of its
    /// encoded image (away from the encoder's zero padding).
    func bootstrapBackground(_ rgb: [Float]) throws -> [Float] {
        let side = Self.bootstrapImageSize, plane = side * side
        var image = Tensor(zeros: [1, 3, side, side])
        image.withUnsafeMutableBufferPointer { p in
            for c in 0..<3 { for i in 0..<plane { p[c * plane + i] = rgb[c] * 2 - 1 } }
        }
        let mean = try model.vae.encode(image).mean
        let (h, w) = (mean.shape[2], mean.shape[3])
        return (0..<mean.shape[1]).map { c in mean.data[(c * h + h / 2) * w + w / 2] * model.vae.scalingFactor }
    }
}
