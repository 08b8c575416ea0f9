import Tensors
import Weights

/// The samplers a render can choose, by the names the command line and presets use.
public enum Sampler: String, CaseIterable, Sendable, Codable {
    /// DDIM (diffusers' `DDIMScheduler`, `eta` for stochastic steps).
    case ddim
    /// DPM-Solver++(2M) on the model's own timesteps (AUTOMATIC1111's "DPM++ 2M").
    case dpmSolver2M = "dpm++2m"
    /// DPM-Solver++(2M) with Karras σ spacing ("DPM++ 2M Karras").
    case dpmSolver2MKarras = "dpm++2m-karras"
    /// Euler's method in σ space (diffusers' `EulerDiscreteScheduler`, "Euler").
    case euler
    /// Euler with fresh noise at every step (`EulerAncestralDiscreteScheduler`, "Euler a").
    case eulerAncestral = "euler-a"
    /// Latent consistency sampling (`LCMScheduler`) for LCM models and LCM-LoRAs, 2–8 steps.
    case lcm
    /// Trajectory consistency sampling (`TCDScheduler`) for TCD models and LoRAs; `eta` is its γ.
    case tcd

    /// What `--help` and the PNG parameters call it.
    public var displayName: String {
        switch self {
        case .ddim: return "DDIM"
        case .dpmSolver2M: return "DPM++ 2M"
        case .dpmSolver2MKarras: return "DPM++ 2M Karras"
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        case .lcm: return "LCM"
        case .tcd: return "TCD"
        }
    }

    /// Whether the sampler takes an eta: DDIM's η (0 deterministic, 1 DDPM-like) and TCD's γ
    /// (0 deterministic, 1 the most stochastic). The others reject eta > 0.
    public var acceptsEta: Bool { self == .ddim || self == .tcd }

    /// The eta a render uses when none is given: 0.3 for TCD (its model cards' γ), else 0.
    public var defaultEta: Float { self == .tcd ? 0.3 : 0 }

    /// The names `makeScheduler`'s `timestepSpacing` takes.
    public static let timestepSpacings = ["leading", "linspace", "trailing"]

    /// The scheduler for `steps` inference steps on a model whose scheduler file is `config`.
    ///
    /// - Parameters:
    ///   - eta: DDIM's η (0 or more) or TCD's γ (0 to 1); nil takes `defaultEta`. The other
    ///     samplers throw `SchedulerError.etaNotAccepted` for eta > 0.
    ///   - timestepSpacing: "leading", "linspace" or "trailing" in place of the file's (nil: the
    ///     file's, or the scheduler's own default when the file names none), as diffusers'
    ///     `from_config(config, timestep_spacing: …)` does it: for few-step sampling of turbo-style
    ///     models (SD-Turbo, Hyper-SD, Lightning: Euler a or DDIM with "trailing"). diffusers' LCM
    ///     and TCD schedulers ignore `timestep_spacing` (their timesteps come from the
    ///     `original_inference_steps` grid), and so do they here; the name is still checked. Any
    ///     other name throws `SchedulerError.unknownTimestepSpacing`.
    public func makeScheduler(config: DDIMSchedulerConfig, steps: Int, eta: Float? = nil,
                              timestepSpacing: String? = nil) throws -> AnyScheduler {
        var config = config
        if let timestepSpacing {
            guard Self.timestepSpacings.contains(timestepSpacing) else {
                throw SchedulerError.unknownTimestepSpacing(timestepSpacing)
            }
            config.timestepSpacing = timestepSpacing
            config.timestepSpacingIsExplicit = true
        }
        let eta = eta ?? defaultEta
        guard eta.isFinite && eta >= 0 else {
            throw SchedulerError.invalidEta(eta, sampler: displayName, range: self == .tcd ? "0 to 1" : "0 or more")
        }
        guard eta == 0 || acceptsEta else { throw SchedulerError.etaNotAccepted(eta, sampler: displayName) }
        switch self {
        case .ddim:
            return .ddim(try DDIMScheduler(config: config, steps: steps, eta: eta))
        case .dpmSolver2M, .dpmSolver2MKarras:
            return .dpmSolver(try DPMSolverMultistepScheduler(config: config, steps: steps,
                                                              karras: self == .dpmSolver2MKarras))
        case .euler, .eulerAncestral:
            return .euler(try EulerScheduler(config: config, steps: steps, ancestral: self == .eulerAncestral))
        case .lcm:
            return .lcm(try LCMScheduler(config: config, steps: steps))
        case .tcd:
            return .tcd(try TCDScheduler(config: config, steps: steps, gamma: eta))
        }
    }
}

/// One of the schedulers, chosen at run time; the renderer's loops are generic over `Scheduler`
/// and run this one when the sampler comes from the command line.
public enum AnyScheduler: Scheduler {
    case ddim(DDIMScheduler)
    case dpmSolver(DPMSolverMultistepScheduler)
    case euler(EulerScheduler)
    case lcm(LCMScheduler)
    case tcd(TCDScheduler)

    public enum ViewState: Sendable {
        case none
        case dpmSolver(DPMSolverMultistepScheduler.ViewState)
    }

    public var timesteps: [Int] {
        switch self {
        case .ddim(let s): return s.timesteps
        case .dpmSolver(let s): return s.timesteps
        case .euler(let s): return s.timesteps
        case .lcm(let s): return s.timesteps
        case .tcd(let s): return s.timesteps
        }
    }

    public var initNoiseSigma: Float {
        switch self {
        case .ddim(let s): return s.initNoiseSigma
        case .dpmSolver(let s): return s.initNoiseSigma
        case .euler(let s): return s.initNoiseSigma
        case .lcm(let s): return s.initNoiseSigma
        case .tcd(let s): return s.initNoiseSigma
        }
    }

    public var needsNoise: Bool {
        switch self {
        case .ddim(let s): return s.needsNoise
        case .dpmSolver(let s): return s.needsNoise
        case .euler(let s): return s.needsNoise
        case .lcm(let s): return s.needsNoise
        case .tcd(let s): return s.needsNoise
        }
    }

    public func drawsNoise(at timestep: Int) -> Bool {
        switch self {
        case .ddim(let s): return s.drawsNoise(at: timestep)
        case .dpmSolver(let s): return s.drawsNoise(at: timestep)
        case .euler(let s): return s.drawsNoise(at: timestep)
        case .lcm(let s): return s.drawsNoise(at: timestep)
        case .tcd(let s): return s.drawsNoise(at: timestep)
        }
    }

    public func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                         state: inout ViewState) -> (mean: Tensor, noiseScale: Float) {
        switch (self, state) {
        case (.ddim(let s), _):
            var none = NoState()
            return s.stepMean(modelOutput, timestep: timestep, sample: sample, state: &none)
        case (.dpmSolver(let s), .dpmSolver(var inner)):
            let out = s.stepMean(modelOutput, timestep: timestep, sample: sample, state: &inner)
            state = .dpmSolver(inner)
            return out
        case (.euler(let s), _):
            var none = NoState()
            return s.stepMean(modelOutput, timestep: timestep, sample: sample, state: &none)
        case (.lcm(let s), _):
            var none = NoState()
            return s.stepMean(modelOutput, timestep: timestep, sample: sample, state: &none)
        case (.tcd(let s), _):
            var none = NoState()
            return s.stepMean(modelOutput, timestep: timestep, sample: sample, state: &none)
        case (.dpmSolver, .none):
            preconditionFailure("a DPM-Solver step needs the view state its scheduler made")
        }
    }

    public func makeViewState() -> ViewState {
        switch self {
        case .ddim, .euler, .lcm, .tcd: return .none
        case .dpmSolver(let s): return .dpmSolver(s.makeViewState())
        }
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor {
        switch self {
        case .ddim(let s): return s.scaleModelInput(sample, timestep: timestep)
        case .dpmSolver(let s): return s.scaleModelInput(sample, timestep: timestep)
        case .euler(let s): return s.scaleModelInput(sample, timestep: timestep)
        case .lcm(let s): return s.scaleModelInput(sample, timestep: timestep)
        case .tcd(let s): return s.scaleModelInput(sample, timestep: timestep)
        }
    }

    public func unetTimestep(_ timestep: Int) -> Float {
        switch self {
        case .ddim(let s): return s.unetTimestep(timestep)
        case .dpmSolver(let s): return s.unetTimestep(timestep)
        case .euler(let s): return s.unetTimestep(timestep)
        case .lcm(let s): return s.unetTimestep(timestep)
        case .tcd(let s): return s.unetTimestep(timestep)
        }
    }

    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout ViewState,
                     noise: Tensor?) -> Tensor {
        switch (self, state) {
        case (.ddim(let s), _):
            var none = NoState()
            return s.step(modelOutput, timestep: timestep, sample: sample, state: &none, noise: noise)
        case (.dpmSolver(let s), .dpmSolver(var inner)):
            let out = s.step(modelOutput, timestep: timestep, sample: sample, state: &inner, noise: noise)
            state = .dpmSolver(inner)
            return out
        case (.euler(let s), _):
            var none = NoState()
            return s.step(modelOutput, timestep: timestep, sample: sample, state: &none, noise: noise)
        case (.lcm(let s), _):
            var none = NoState()
            return s.step(modelOutput, timestep: timestep, sample: sample, state: &none, noise: noise)
        case (.tcd(let s), _):
            var none = NoState()
            return s.step(modelOutput, timestep: timestep, sample: sample, state: &none, noise: noise)
        case (.dpmSolver, .none):
            preconditionFailure("a DPM-Solver step needs the view state its scheduler made")
        }
    }

    public func pixelHistory(of state: ViewState) -> Tensor? {
        switch (self, state) {
        case (.dpmSolver(let s), .dpmSolver(let inner)): return s.pixelHistory(of: inner)
        default: return nil
        }
    }

    public func checkpoint(of state: ViewState) -> (history: Tensor?, index: Int?) {
        switch (self, state) {
        case (.dpmSolver(let s), .dpmSolver(let inner)): return s.checkpoint(of: inner)
        default: return (nil, nil)
        }
    }

    public func restoredViewState(history: Tensor?, index: Int?) -> ViewState {
        switch self {
        case .ddim, .euler, .lcm, .tcd: return .none
        case .dpmSolver(let s): return .dpmSolver(s.restoredViewState(history: history, index: index))
        }
    }

    public func viewState(pixelHistory: Tensor?, index: Int) -> ViewState {
        switch self {
        case .ddim, .euler, .lcm, .tcd: return .none
        case .dpmSolver(let s): return .dpmSolver(s.viewState(pixelHistory: pixelHistory, index: index))
        }
    }

    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        switch self {
        case .ddim(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        case .dpmSolver(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        case .euler(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        case .lcm(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        case .tcd(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        }
    }
}
