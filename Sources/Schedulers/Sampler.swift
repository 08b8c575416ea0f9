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

    /// What `--help` and the PNG parameters call it.
    public var displayName: String {
        switch self {
        case .ddim: return "DDIM"
        case .dpmSolver2M: return "DPM++ 2M"
        case .dpmSolver2MKarras: return "DPM++ 2M Karras"
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        }
    }

    /// The scheduler for `steps` inference steps on a model whose scheduler file is `config`.
    /// `eta` applies to DDIM only; the others reject eta > 0.
    public func makeScheduler(config: DDIMSchedulerConfig, steps: Int, eta: Float = 0) throws -> AnyScheduler {
        switch self {
        case .ddim:
            return .ddim(try DDIMScheduler(config: config, steps: steps, eta: eta))
        case .dpmSolver2M, .dpmSolver2MKarras:
            guard eta == 0 else { throw SchedulerError.unsupported("eta \(eta) with \(displayName) (eta is DDIM's)") }
            return .dpmSolver(try DPMSolverMultistepScheduler(config: config, steps: steps,
                                                              karras: self == .dpmSolver2MKarras))
        case .euler, .eulerAncestral:
            guard eta == 0 else { throw SchedulerError.unsupported("eta \(eta) with \(displayName) (eta is DDIM's)") }
            return .euler(try EulerScheduler(config: config, steps: steps, ancestral: self == .eulerAncestral))
        }
    }
}

/// One of the schedulers, chosen at run time; the renderer's loops are generic over `Scheduler`
/// and run this one when the sampler comes from the command line.
public enum AnyScheduler: Scheduler {
    case ddim(DDIMScheduler)
    case dpmSolver(DPMSolverMultistepScheduler)
    case euler(EulerScheduler)

    public enum ViewState: Sendable {
        case none
        case dpmSolver(DPMSolverMultistepScheduler.ViewState)
    }

    public var timesteps: [Int] {
        switch self {
        case .ddim(let s): return s.timesteps
        case .dpmSolver(let s): return s.timesteps
        case .euler(let s): return s.timesteps
        }
    }

    public var initNoiseSigma: Float {
        switch self {
        case .ddim(let s): return s.initNoiseSigma
        case .dpmSolver(let s): return s.initNoiseSigma
        case .euler(let s): return s.initNoiseSigma
        }
    }

    public var needsNoise: Bool {
        switch self {
        case .ddim(let s): return s.needsNoise
        case .dpmSolver(let s): return s.needsNoise
        case .euler(let s): return s.needsNoise
        }
    }

    public func drawsNoise(at timestep: Int) -> Bool {
        switch self {
        case .ddim(let s): return s.drawsNoise(at: timestep)
        case .dpmSolver(let s): return s.drawsNoise(at: timestep)
        case .euler(let s): return s.drawsNoise(at: timestep)
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
        case (.dpmSolver, .none):
            preconditionFailure("a DPM-Solver step needs the view state its scheduler made")
        }
    }

    public func makeViewState() -> ViewState {
        switch self {
        case .ddim, .euler: return .none
        case .dpmSolver(let s): return .dpmSolver(s.makeViewState())
        }
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor {
        switch self {
        case .ddim(let s): return s.scaleModelInput(sample, timestep: timestep)
        case .dpmSolver(let s): return s.scaleModelInput(sample, timestep: timestep)
        case .euler(let s): return s.scaleModelInput(sample, timestep: timestep)
        }
    }

    public func unetTimestep(_ timestep: Int) -> Float {
        switch self {
        case .ddim(let s): return s.unetTimestep(timestep)
        case .dpmSolver(let s): return s.unetTimestep(timestep)
        case .euler(let s): return s.unetTimestep(timestep)
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

    public func viewState(pixelHistory: Tensor?, index: Int) -> ViewState {
        switch self {
        case .ddim, .euler: return .none
        case .dpmSolver(let s): return .dpmSolver(s.viewState(pixelHistory: pixelHistory, index: index))
        }
    }

    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        switch self {
        case .ddim(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        case .dpmSolver(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        case .euler(let s): return s.addNoise(original, noise: noise, timestep: timestep)
        }
    }
}
