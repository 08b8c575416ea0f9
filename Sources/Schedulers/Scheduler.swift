import Tensors

/// A denoising scheduler as the renderer drives it: a fixed list of timesteps and a step that
/// maps the model's output at one timestep to the sample at the next.
///
/// Multistep schedulers keep history per sample; MultiDiffusion steps many windows with one
/// scheduler, so that history lives in a value of `ViewState` that the caller keeps per window.
public protocol Scheduler: Sendable {
    /// Per-window history (e.g. previous model outputs). Stateless schedulers use `NoState`.
    associatedtype ViewState: Sendable

    /// Timesteps to run, in order (descending).
    var timesteps: [Int] { get }
    /// Standard deviation of the initial noise (1 for DDIM).
    var initNoiseSigma: Float { get }
    /// Whether `step` needs fresh noise (stochastic samplers such as DDIM with eta > 0).
    var needsNoise: Bool { get }
    /// Whether the step at `timestep` draws fresh noise from the generator. diffusers' LCM and TCD
    /// schedulers draw none at their last step; the others draw at every step when `needsNoise`.
    func drawsNoise(at timestep: Int) -> Bool

    /// A fresh state for one window.
    func makeViewState() -> ViewState
    /// The model input for `sample` at `timestep` (identity for DDIM).
    func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor
    /// The timestep the UNet is given at `timestep` (the same number, except where a schedule's
    /// timesteps are fractional and `timesteps` lists them rounded).
    func unetTimestep(_ timestep: Int) -> Float
    /// The sample at the next timestep. `noise` has the sample's shape when `drawsNoise(at: timestep)`
    /// (nil otherwise).
    func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout ViewState,
              noise: Tensor?) -> Tensor
    /// The step split into its noise-free part and the factor of its fresh noise, so that
    /// `step(…, noise: n)` is `mean + noiseScale · n`. MultiDiffusion fuses the windows' means and
    /// then adds one canvas-wide noise (see `NoiseFusion`). Deterministic steps return scale 0.
    func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout ViewState) -> (mean: Tensor, noiseScale: Float)
    /// Forward diffusion of a clean sample to `timestep` (img2img's starting point).
    func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor

    /// For loops whose windows move between steps (SpotDiffusion): the part of a window's state
    /// that belongs to its pixels, shaped like the window (nil when the state has none). The loop
    /// fuses it over the canvas like the samples and crops it for the next step's windows.
    func pixelHistory(of state: ViewState) -> Tensor?
    /// A window's state for the step at `index` in `timesteps`, from its crop of the fused history.
    func viewState(pixelHistory: Tensor?, index: Int) -> ViewState

    /// A window's whole state for a resumable checkpoint: its history tensor (nil: none) and its
    /// step index (nil: not yet set). `restoredViewState(history:index:)` gives the same state back.
    func checkpoint(of state: ViewState) -> (history: Tensor?, index: Int?)
    /// The state `checkpoint(of:)` described.
    func restoredViewState(history: Tensor?, index: Int?) -> ViewState
}

extension Scheduler {
    public func unetTimestep(_ timestep: Int) -> Float { Float(timestep) }
    public func drawsNoise(at timestep: Int) -> Bool { needsNoise }

    /// For deterministic schedulers: the step itself, with no noise.
    public func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                         state: inout ViewState) -> (mean: Tensor, noiseScale: Float) {
        precondition(!needsNoise, "\(Self.self) is stochastic and must split its step")
        return (step(modelOutput, timestep: timestep, sample: sample, state: &state, noise: nil), 0)
    }
}

extension Tensor {
    /// `self + scale · noise`: a stochastic step's mean with its fresh noise added.
    public func addingNoise(_ noise: Tensor, scale: Float) -> Tensor {
        precondition(shape == noise.shape, "noise \(noise.shape) for a sample of \(shape)")
        guard scale != 0 else { return self }
        return Tensor(uninitializedShape: shape) { out in
            withUnsafeBufferPointer { x in
                noise.withUnsafeBufferPointer { n in
                    for i in 0..<out.count { out[i] = x[i] + scale * n[i] }
                }
            }
        }
    }
}

extension Scheduler where ViewState == NoState {
    public func pixelHistory(of state: NoState) -> Tensor? { nil }
    public func viewState(pixelHistory: Tensor?, index: Int) -> NoState { NoState() }
    public func checkpoint(of state: NoState) -> (history: Tensor?, index: Int?) { (nil, nil) }
    public func restoredViewState(history: Tensor?, index: Int?) -> NoState { NoState() }
}

/// The view state of schedulers that keep no history.
public struct NoState: Sendable, Equatable {
    public init() {}
}

/// Errors from configuring a scheduler.
public enum SchedulerError: Error, CustomStringConvertible, Equatable {
    case unsupported(String)
    case invalidSteps(Int, trainTimesteps: Int)
    /// LCM and TCD choose their steps from a grid of `gridSize` timesteps (`original_inference_steps`).
    case invalidStepsOnGrid(Int, gridSize: Int, sampler: String)
    /// An eta given to a sampler that takes none (see `Sampler.acceptsEta`).
    case etaNotAccepted(Float, sampler: String)
    /// An eta outside the values `sampler` takes (`range`, e.g. "0 to 1").
    case invalidEta(Float, sampler: String, range: String)
    /// A timestep spacing other than "leading", "linspace" and "trailing".
    case unknownTimestepSpacing(String)

    public var description: String {
        switch self {
        case .unsupported(let what): return "scheduler: \(what) is not supported"
        case .invalidSteps(let n, let train):
            return "scheduler: \(n) inference steps is not possible; use 1 to \(train) (the model was trained with \(train) timesteps)"
        case .invalidStepsOnGrid(let n, let grid, let sampler):
            return "scheduler: \(n) inference steps is not possible with \(sampler); use 1 to \(grid) (its timesteps are chosen from a grid of \(grid), original_inference_steps)"
        case .etaNotAccepted(let eta, let sampler):
            let takers = Sampler.allCases.filter(\.acceptsEta).map(\.displayName).joined(separator: " and ")
            return "scheduler: eta \(eta) does not apply to \(sampler); only \(takers) take eta"
        case .invalidEta(let eta, let sampler, let range):
            return "scheduler: eta \(eta) is not possible with \(sampler); use \(range)"
        case .unknownTimestepSpacing(let name):
            let known = Sampler.timestepSpacings.map { "\"\($0)\"" }.joined(separator: ", ")
            return "scheduler: unknown timestep spacing \"\(name)\"; use \(known)"
        }
    }
}
