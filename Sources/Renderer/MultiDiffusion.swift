import Models
import Schedulers
import Tensors

/// Classifier-free guidance as the Stable Diffusion pipelines apply it.
public struct Guidance: Sendable, Equatable {
    /// The scale g in ε = ε_u + g (ε_c − ε_u). At g ≤ 1 the unconditional pass is skipped and the
    /// conditional prediction is used alone, as diffusers does.
    public var scale: Float
    /// Conditional text embeddings [1, tokens, dim].
    public var conditional: Tensor
    /// Unconditional (negative prompt) embeddings [1, tokens, dim].
    public var unconditional: Tensor
    /// The scale goes into the UNet as an embedding (`time_cond_proj_dim` UNets, such as
    /// LCM-distilled models): one UNet call, no unconditional pass, as diffusers does.
    public var embedded: Bool

    public init(scale: Float, conditional: Tensor, unconditional: Tensor, embedded: Bool = false) {
        self.scale = scale
        self.conditional = conditional
        self.unconditional = unconditional
        self.embedded = embedded
    }

    /// Whether the step runs the classifier-free guidance pair.
    public var isActive: Bool { scale > 1 && !embedded }
}

/// A denoising loop the command line can drive: one step per `next()`, the canvas after it.
public protocol DenoisingProcess: IteratorProtocol where Element == StepReport {
    var latents: Tensor { get }
    var stepCount: Int { get }
}

/// What one denoising step did, for progress reports.
public struct StepReport: Sendable {
    /// 0-based index of the step just finished, counted from the loop's first step.
    public let index: Int
    public let count: Int
    public let timestep: Int
    public let views: Int
    /// The fused latents after the step.
    public let latents: Tensor
}

/// MultiDiffusion's denoising loop, one step per `next()`.
///
/// At each timestep every window of the canvas goes through the UNet (batched `viewBatchSize`
/// windows at a time, each with its unconditional and conditional half interleaved as
/// [v0ᵤ, v0꜀, v1ᵤ, v1꜀, …] like diffusers), the scheduler steps each window with that window's own
/// state, and the fuser averages the windows back into the canvas.
///
/// With `shiftSeed` the loop runs SpotDiffusion instead (Frolov et al. 2024): side-by-side
/// windows without overlap, the whole grid moved by a random offset at every step, so a border
/// in one step lies inside a window in the next: window/stride times fewer UNet calls at most
/// (8 or 9 windows instead of 57 on a 4096x512 canvas at stride 8). Scheduler history then lives on the
/// canvas (`Scheduler.pixelHistory(of:)`), since windows do not persist between steps.
public struct DenoisingLoop<S: Scheduler>: DenoisingProcess, Sequence {
    public private(set) var latents: Tensor
    /// The windows of the next step (fixed for MultiDiffusion; redrawn every step for SpotDiffusion).
    public private(set) var views: [LatentView]
    private let tiler: ViewTiler
    private var shifts: SplitMix64?
    private var history: Tensor?
    private let unet: UNet2DConditionModel
    private let scheduler: S
    private let guidance: Guidance
    private let viewBatchSize: Int
    private var states: [S.ViewState]
    private var generator: TorchGenerator
    private var stepIndex: Int
    private let firstStep: Int
    /// Per-window fusion weights (nil: uniform), flattened [height · width].
    public var viewWeights: [[Float]?]
    /// Where a stochastic step's fresh noise is added (before or after the windows are fused).
    public var noiseFusion: NoiseFusion
    /// Who runs each step's UNet batches (this process unless spread over an MPI job).
    public var distributor: any WorkDistributor = LocalDistributor()
    /// Channels appended to every window's UNet input after the scaled latents, [1, k, h, w] over
    /// the whole canvas and cropped like the window (also into both halves of the guidance pair):
    /// an inpainting UNet's mask and masked-image latents. nil for ordinary UNets.
    public var conditioning: Tensor? {
        willSet {
            precondition(newValue.map { $0.shape[0] == 1 && $0.shape.dropFirst(2) == latents.shape.dropFirst(2) } ?? true,
                         "conditioning \(newValue!.shape) does not cover the canvas \(latents.shape)")
        }
    }
    /// The region a 4-channel model keeps from a known image (inpainting, outpainting): after
    /// every step it is put back on the fused canvas, noised to the next step's timestep.
    public var knownRegion: KnownRegion? {
        willSet {
            precondition(newValue.map { $0.imageLatents.shape == latents.shape } ?? true,
                         "known region \(newValue!.imageLatents.shape) does not cover the canvas \(latents.shape)")
        }
    }

    /// - Parameters:
    ///   - latents: the starting canvas [1, C, h, w], already scaled by the scheduler's initial sigma.
    ///   - generator: the source of any noise the scheduler needs (DDIM with eta > 0, Euler a, LCM,
    ///     TCD): one canvas-shaped draw per step with `.canvas` noise fusion, else one draw per
    ///     batch of windows in order, as diffusers draws it.
    ///   - firstStep: the index in `scheduler.timesteps` to start from (img2img skips the first
    ///     steps; `latents` are then noised to that step's timestep).
    ///   - shiftSeed: run SpotDiffusion, drawing each step's offset from this seed (nil: MultiDiffusion).
    ///   - noiseFusion: where stochastic steps add their noise.
    public init(unet: UNet2DConditionModel, scheduler: S, guidance: Guidance, latents: Tensor,
                tiler: ViewTiler, viewBatchSize: Int = 1, generator: TorchGenerator, firstStep: Int = 0,
                shiftSeed: UInt64? = nil, noiseFusion: NoiseFusion = .canvas) {
        self.noiseFusion = noiseFusion
        precondition(viewBatchSize >= 1, "viewBatchSize must be at least 1")
        precondition(firstStep >= 0 && firstStep <= scheduler.timesteps.count, "firstStep \(firstStep) out of range")
        self.firstStep = firstStep
        self.stepIndex = firstStep
        self.unet = unet
        self.scheduler = scheduler
        self.guidance = guidance
        self.latents = latents
        self.tiler = tiler
        self.shifts = shiftSeed.map(SplitMix64.init)
        self.views = shiftSeed == nil ? tiler.views(height: latents.shape[2], width: latents.shape[3])
            : tiler.shiftedViews(height: latents.shape[2], width: latents.shape[3], shift: (0, 0))
        self.viewBatchSize = viewBatchSize
        self.states = views.map { _ in scheduler.makeViewState() }
        self.generator = generator
        self.viewWeights = Array(repeating: nil, count: views.count)
    }

    /// Steps this loop runs.
    public var stepCount: Int { scheduler.timesteps.count - firstStep }

    /// Gives every window the weights of `weighting` (uniform clears them).
    public mutating func weightWindows(_ weighting: WindowWeighting) {
        viewWeights = weighting.weights(for: views)
    }

    public mutating func next() -> StepReport? {
        guard stepIndex < scheduler.timesteps.count else { return nil }
        let t = scheduler.timesteps[stepIndex]
        let (c, h, w) = (latents.shape[1], latents.shape[2], latents.shape[3])
        if var rng = shifts {
            let window = UInt64(tiler.window)
            let shift = (row: h > tiler.window ? Int(rng.next() % window) : 0, column: Int(rng.next() % window))
            shifts = rng
            views = tiler.shiftedViews(height: h, width: w, shift: shift)
            states = views.map { scheduler.viewState(pixelHistory: history?.crop($0), index: stepIndex) }
            viewWeights = Array(repeating: nil, count: views.count)
        }
        var fuser = Fuser(channels: c, height: h, width: w)
        var historyFuser = shifts == nil ? nil : Optional(Fuser(channels: c, height: h, width: w))
        let canvasNoise = noiseFusion == .canvas && scheduler.needsNoise
        let drawsNoise = scheduler.drawsNoise(at: t)
        var noiseScale: Float = 0
        let batches = Swift.stride(from: 0, to: views.count, by: viewBatchSize).map {
            $0..<Swift.min(views.count, $0 + viewBatchSize)
        }
        // The UNet batches (the cost of a step) may run in other processes; the scheduler then
        // steps every window here, in order, drawing noise as one process would.
        // (what the UNet batches read, copied: they may not capture the loop being stepped)
        let step = (unet: unet, scheduler: scheduler, guidance: guidance, conditioning: conditioning, canvas: latents,
                    views: views)
        distributor.distribute(costs: batches.map { $0.count * (guidance.isActive ? 2 : 1) }, { b in
            guidedNoise(unet: step.unet, scheduler: step.scheduler,
                        items: batches[b].map { (step.canvas.crop(step.views[$0]), step.guidance) }, timestep: t,
                        conditioning: step.conditioning.map { extra in batches[b].map { extra.crop(step.views[$0]) } })
        }, use: { b, predictions in
            let batch = batches[b]
            let noise = !canvasNoise && drawsNoise
                ? generator.randn([batch.count, c, views[batch.lowerBound].height, views[batch.lowerBound].width]) : nil
            for (k, v) in batch.enumerated() {
                let window = step.canvas.crop(views[v])
                let stepped: Tensor
                if canvasNoise {
                    (stepped, noiseScale) = scheduler.stepMean(predictions[k], timestep: t, sample: window,
                                                               state: &states[v])
                } else {
                    stepped = scheduler.step(predictions[k], timestep: t, sample: window,
                                             state: &states[v], noise: noise?.batch(k))
                }
                fuser.add(stepped, at: views[v], weight: viewWeights[v])
                if let past = scheduler.pixelHistory(of: states[v]) { historyFuser?.add(past, at: views[v]) }
            }
        })
        latents = fuser.fused()
        if canvasNoise && drawsNoise {
            latents = latents.addingNoise(generator.randn(latents.shape), scale: noiseScale)
        }
        if let historyFuser, historyFuser.uncoveredPixels == 0 { history = historyFuser.fused() }
        if let knownRegion {
            let next = stepIndex + 1 < scheduler.timesteps.count ? scheduler.timesteps[stepIndex + 1] : nil
            latents = knownRegion.blended(into: latents, scheduler: scheduler, nextTimestep: next)
        }
        stepIndex += 1
        return StepReport(index: stepIndex - 1 - firstStep, count: stepCount, timestep: t,
                          views: views.count, latents: latents)
    }

    /// The loop's position after its last completed step, for a resumable render's state.
    public func checkpoint() -> LoopCheckpoint {
        var c = LoopCheckpoint(stepIndex: stepIndex, latents: latents, generator: generator.position)
        if let shifts {
            c.numbers["shift"] = shifts.state
            if let history { c.tensors["history"] = history }
        } else {
            for (v, state) in states.enumerated() { c.addView("view\(v)", scheduler.checkpoint(of: state)) }
        }
        return c
    }

    /// Continues from `checkpoint` (taken of a loop with the same settings); every shape and index
    /// is checked against this loop first, and nothing changes when one is wrong.
    public mutating func restore(_ checkpoint: LoopCheckpoint) throws {
        let count = scheduler.timesteps.count
        try checkpoint.check(latentsShape: latents.shape, steps: firstStep...count)
        var restored = states
        if shifts != nil {
            guard let shift = checkpoint.numbers["shift"] else { throw ResumeError.invalid("SpotDiffusion's offsets are missing") }
            try checkpoint.checkNames(tensors: ["history"], numbers: ["shift"])
            if let h = checkpoint.tensors["history"], h.shape != latents.shape {
                throw ResumeError.invalid("the history is \(h.shape), not \(latents.shape)")
            }
            shifts = SplitMix64(shift)
            history = checkpoint.tensors["history"]
        } else {
            let names = Set(views.indices.map { "view\($0)" })
            try checkpoint.checkNames(tensors: names, numbers: names)
            for v in views.indices {
                let (h, i) = try checkpoint.view("view\(v)", shape: [1, latents.shape[1], views[v].height, views[v].width], steps: count)
                restored[v] = scheduler.restoredViewState(history: h, index: i)
            }
        }
        states = restored
        latents = checkpoint.latents
        generator = checkpoint.restoredGenerator
        stepIndex = checkpoint.stepIndex
    }
}

/// Classifier-free guided ε for windows that may each have their own prompt and scale, in one UNet
/// call. A window with active guidance contributes its unconditional and conditional input next
/// to each other ([xᵤ, x꜀], as diffusers orders them); one without contributes only x꜀.
/// `conditioning` (one per item) is appended to the scaled sample along the channels, as an
/// inpainting UNet takes its mask and masked-image latents; it is not scaled.
func guidedNoise<S: Scheduler>(unet: UNet2DConditionModel, scheduler: S, items: [(sample: Tensor, guidance: Guidance)],
                               timestep t: Int, conditioning: [Tensor]? = nil) -> [Tensor] {
    precondition(conditioning.map { $0.count == items.count } ?? true, "one conditioning per window")
    var samples: [Tensor] = [], contexts: [Tensor] = [], conditions: [Float] = []
    for (k, (sample, guidance)) in items.enumerated() {
        var input = scheduler.scaleModelInput(sample, timestep: t)
        if let extra = conditioning?[k] { input = Tensor.concatenate([input, extra], dimension: 1) }
        precondition(input.shape[1] == unet.config.inChannels,
                     "the UNet takes \(unet.config.inChannels) channels but gets \(input.shape[1])"
                     + (input.shape[1] < unet.config.inChannels ? " (an inpainting UNet needs its mask and masked-image latents)" : ""))
        if guidance.isActive {
            samples += [input, input]
            contexts += [guidance.unconditional, guidance.conditional]
        } else {
            samples.append(input)
            contexts.append(guidance.conditional)
        }
        if let dim = unet.config.timeCondProjDim {
            precondition(guidance.embedded, "a guidance-embedded UNet needs embedded guidance")
            conditions += guidanceScaleEmbedding(guidance.scale - 1, dimension: dim)
        }
    }
    let condition = unet.config.timeCondProjDim.map { Tensor(shape: [samples.count, $0], data: conditions) }
    let eps = unet(Tensor.concatenate(samples, dimension: 0), timestep: scheduler.unetTimestep(t),
                   encoderHiddenStates: Tensor.concatenate(contexts, dimension: 0), timestepCondition: condition)
    var index = 0
    return items.map { _, guidance in
        defer { index += guidance.isActive ? 2 : 1 }
        guard guidance.isActive else { return eps.batch(index) }
        let per = eps.count / eps.shape[0], g = guidance.scale
        return Tensor(uninitializedShape: [1] + eps.shape.dropFirst()) { out in
            eps.withUnsafeBufferPointer { e in
                let u = e.baseAddress! + index * per, c = u + per
                for i in 0..<per { out[i] = u[i] + g * (c[i] - u[i]) }
            }
        }
    }
}

/// SplitMix64 (Steele et al.): SpotDiffusion's offsets, a stream of its own so the seed's
/// latents and noise stay those of diffusers.
struct SplitMix64: Sendable {
    private(set) var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
