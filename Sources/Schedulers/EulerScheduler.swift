import Foundation
import Tensors
import Weights

/// diffusers' `EulerDiscreteScheduler` and, with `ancestral`, `EulerAncestralDiscreteScheduler`
/// (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", algorithm 2
/// without churn): AUTOMATIC1111's "Euler" and "Euler a". The sample lives in σ space (scaled
/// by `initNoiseSigma` at the start and by 1/√(σ² + 1) on its way into the UNet); Euler a adds fresh
/// noise at every step, so its pictures keep changing with the step count.
///
/// Configured from a model's `scheduler_config.json` as diffusers' `from_config` does it (without
/// `timestep_spacing` in the file: "linspace", whose timesteps are fractional; the UNet gets them
/// as they are, and `timesteps` lists them rounded). Epsilon and v-prediction models.
public struct EulerScheduler: Scheduler {
    public typealias ViewState = NoState

    public let config: DDIMSchedulerConfig
    public let ancestral: Bool
    /// ᾱ per training timestep (2⁻²⁴ at the last one under zero terminal SNR, as diffusers).
    public let alphasCumprod: [Float]
    /// The timesteps the UNet sees, in order (fractional with "linspace" spacing).
    public private(set) var modelTimesteps: [Float] = []
    public private(set) var timesteps: [Int] = []
    /// σ at each step, and 0 after the last.
    public private(set) var sigmas: [Float] = []

    public var needsNoise: Bool { ancestral }

    /// The largest σ, or √(σ² + 1) of it with "leading" spacing (diffusers' `init_noise_sigma`).
    public var initNoiseSigma: Float {
        let top = sigmas.max() ?? 1
        return ["linspace", "trailing"].contains(timestepSpacing) ? top : (top * top + 1).squareRoot()
    }

    public init(config: DDIMSchedulerConfig, steps: Int, ancestral: Bool = false) throws {
        guard ["epsilon", "v_prediction"].contains(config.predictionType) else {
            throw SchedulerError.unsupported("prediction_type \"\(config.predictionType)\" with Euler")
        }
        self.config = config
        self.ancestral = ancestral
        alphasCumprod = try NoiseSchedule.alphasCumprodForSigmas(config)
        try setTimesteps(steps)
    }

    /// `timestep_spacing` as `from_config` resolves it for these classes.
    public var timestepSpacing: String { config.timestepSpacing(classDefault: "linspace") }

    public mutating func setTimesteps(_ steps: Int) throws {
        let n = config.numTrainTimesteps
        guard steps >= 1 && steps <= n else { throw SchedulerError.invalidSteps(steps, trainTimesteps: n) }
        let ts: [Double]
        switch timestepSpacing {
        case "linspace":  // numpy's linspace(0, n − 1, steps) in float64, then float32
            let step = steps == 1 ? 0 : Double(n - 1) / Double(steps - 1)
            ts = (0..<steps).reversed().map { i in i == steps - 1 && steps > 1 ? Double(n - 1) : Double(Float(Double(i) * step)) }
        case "leading":
            let ratio = n / steps
            ts = (0..<steps).reversed().map { Double($0 * ratio + config.stepsOffset) }
        case "trailing":
            ts = trailingTimesteps(trainSteps: n, steps: steps).map(Double.init)
        default:
            throw SchedulerError.unsupported("timestep_spacing \"\(timestepSpacing)\"")
        }
        let trainSigmas = alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        sigmas = ts.map { t -> Float in  // numpy's interp between the float32 σ of neighbouring timesteps
            let i = min(Int(t), n - 1), j = min(i + 1, n - 1)
            let lo = Double(trainSigmas[i]), hi = Double(trainSigmas[j])
            return Float(lo + (hi - lo) * (t - Double(i)))
        } + [0]
        modelTimesteps = ts.map { Float($0) }
        timesteps = modelTimesteps.map { Int($0.rounded(.toNearestOrEven)) }
    }

    public func makeViewState() -> NoState { NoState() }

    public func unetTimestep(_ timestep: Int) -> Float { modelTimesteps[index(timestep)] }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor {
        let sigma = sigmas[index(timestep)]
        let scale = 1 / (sigma * sigma + 1).squareRoot()
        return Tensor(shape: sample.shape, data: sample.data.map { $0 * scale })
    }

    public func step(_ modelOutput: Tensor, timestep t: Int, sample: Tensor, state: inout NoState,
                     noise: Tensor?) -> Tensor {
        let (mean, up) = stepMean(modelOutput, timestep: t, sample: sample, state: &state)
        guard ancestral else { return mean }
        guard let noise else { preconditionFailure("Euler ancestral needs noise") }
        return mean.addingNoise(noise, scale: up)
    }

    /// Euler's step to σ_down (σ_next without ancestral noise) and, for Euler a, σ_up, the
    /// standard deviation of the noise that takes it to σ_next.
    public func stepMean(_ modelOutput: Tensor, timestep t: Int, sample: Tensor,
                         state: inout NoState) -> (mean: Tensor, noiseScale: Float) {
        precondition(modelOutput.shape == sample.shape, "Euler step: \(modelOutput.shape) vs \(sample.shape)")
        let i = index(t)
        let sigma = sigmas[i], next = sigmas[i + 1]
        let x = sample.data, m = modelOutput.data
        let x0: [Float] = config.predictionType == "epsilon"
            ? zip(x, m).map { $0 - sigma * $1 }
            : zip(x, m).map { $1 * (-sigma / (sigma * sigma + 1).squareRoot()) + $0 / (sigma * sigma + 1) }
        var target = next, up: Float = 0
        if ancestral {
            up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).squareRoot()
            target = (next * next - up * up).squareRoot()
        }
        let dt = target - sigma
        let out = (0..<x.count).map { k in x[k] + (x[k] - x0[k]) / sigma * dt }
        return (Tensor(shape: sample.shape, data: out), up)
    }

    /// x + σ·noise at the step of `timestep` (img2img's start in σ space).
    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        precondition(original.shape == noise.shape, "addNoise: \(original.shape) vs \(noise.shape)")
        let sigma = sigmas[index(timestep)]
        return Tensor(shape: original.shape, data: zip(original.data, noise.data).map { $0 + sigma * $1 })
    }

    /// The step of `t` (timesteps are distinct for every spacing).
    private func index(_ t: Int) -> Int {
        guard let i = timesteps.firstIndex(of: t) else { preconditionFailure("timestep \(t) is not in the schedule") }
        return i
    }
}
