import Foundation
import Tensors
import Weights

/// diffusers' `DDIMScheduler` (Song et al., "Denoising Diffusion Implicit Models"), configured by
/// its `scheduler_config.json`: beta schedules linear / scaled_linear / squaredcos_cap_v2,
/// timestep spacing leading / trailing / linspace, `steps_offset`, `set_alpha_to_one`,
/// prediction types epsilon / v_prediction / sample, `clip_sample`, dynamic thresholding and
/// eta > 0 with caller-supplied noise.
public struct DDIMScheduler: Scheduler {
    public typealias ViewState = NoState

    public let config: DDIMSchedulerConfig
    public let schedule: NoiseSchedule
    /// ᾱ used for the step after the last timestep.
    public let finalAlphaCumprod: Float
    /// η: 0 is deterministic DDIM, 1 is DDPM-like ancestral noise.
    public var eta: Float
    public private(set) var timesteps: [Int] = []
    public private(set) var inferenceSteps = 0

    public var initNoiseSigma: Float { 1 }
    public var needsNoise: Bool { eta > 0 }

    /// A scheduler set up for `steps` inference steps.
    public init(config: DDIMSchedulerConfig, steps: Int, eta: Float = 0) throws {
        guard ["epsilon", "v_prediction", "sample"].contains(config.predictionType) else {
            throw SchedulerError.unsupported("prediction_type \"\(config.predictionType)\"")
        }
        self.config = config
        schedule = try NoiseSchedule(config: config)
        finalAlphaCumprod = config.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
        self.eta = eta
        try setTimesteps(steps)
    }

    /// Chooses the timesteps for `steps` inference steps per `timestep_spacing`.
    public mutating func setTimesteps(_ steps: Int) throws {
        let n = config.numTrainTimesteps
        guard steps >= 1 && steps <= n else { throw SchedulerError.invalidSteps(steps, trainTimesteps: n) }
        switch config.timestepSpacing {
        case "linspace":
            timesteps = (0..<steps).reversed().map { i in
                let v = steps == 1 ? 0 : Double(n - 1) * Double(i) / Double(steps - 1)
                return Int(v.rounded(.toNearestOrEven))
            }
        case "leading":
            let ratio = n / steps
            timesteps = (0..<steps).reversed().map { $0 * ratio + config.stepsOffset }
        case "trailing":
            timesteps = trailingTimesteps(trainSteps: n, steps: steps)
        default:
            throw SchedulerError.unsupported("timestep_spacing \"\(config.timestepSpacing)\"")
        }
        inferenceSteps = steps
    }

    public func makeViewState() -> NoState { NoState() }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout NoState,
                     noise: Tensor?) -> Tensor {
        step(modelOutput, timestep: timestep, sample: sample, noise: noise).prevSample
    }

    public func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                         state: inout NoState) -> (mean: Tensor, noiseScale: Float) {
        let parts = update(modelOutput, timestep: timestep, sample: sample)
        return (parts.mean, parts.std)
    }

    /// One DDIM update (formula (12) of the paper), returning the previous sample and the
    /// predicted x₀.
    public func step(_ modelOutput: Tensor, timestep t: Int, sample: Tensor, noise: Tensor? = nil,
                     useClippedModelOutput: Bool = false) -> (prevSample: Tensor, predOriginalSample: Tensor) {
        let parts = update(modelOutput, timestep: t, sample: sample, useClippedModelOutput: useClippedModelOutput)
        guard eta > 0 else { return (parts.mean, parts.x0) }
        guard let noise else { preconditionFailure("DDIM with eta > 0 needs noise") }
        return (parts.mean.addingNoise(noise, scale: parts.std), parts.x0)
    }

    /// The update without its noise: the mean of x_{t−1}, the standard deviation of the noise
    /// it gets (η·σ_t), and the predicted x₀.
    private func update(_ modelOutput: Tensor, timestep t: Int, sample: Tensor,
                        useClippedModelOutput: Bool = false) -> (mean: Tensor, std: Float, x0: Tensor) {
        precondition(modelOutput.shape == sample.shape, "DDIM step: \(modelOutput.shape) vs \(sample.shape)")
        let ac = schedule.alphasCumprod
        let prevT = t - config.numTrainTimesteps / inferenceSteps
        let alphaT = ac[t]
        let alphaPrev = prevT >= 0 ? ac[prevT] : finalAlphaCumprod
        let betaT = 1 - alphaT
        let sqrtAlpha = alphaT.squareRoot(), sqrtBeta = betaT.squareRoot()

        let count = sample.count
        var x0 = [Float](repeating: 0, count: count)
        var eps = [Float](repeating: 0, count: count)
        let x = sample.data, m = modelOutput.data
        switch config.predictionType {
        case "epsilon":
            for i in 0..<count {
                x0[i] = (x[i] - sqrtBeta * m[i]) / sqrtAlpha
                eps[i] = m[i]
            }
        case "sample":
            for i in 0..<count {
                x0[i] = m[i]
                eps[i] = (x[i] - sqrtAlpha * m[i]) / sqrtBeta
            }
        default:  // v_prediction
            for i in 0..<count {
                x0[i] = sqrtAlpha * x[i] - sqrtBeta * m[i]
                eps[i] = sqrtAlpha * m[i] + sqrtBeta * x[i]
            }
        }

        if config.thresholding {
            x0 = dynamicThreshold(x0, batch: sample.shape[0], ratio: config.dynamicThresholdingRatio,
                                  maxValue: config.sampleMaxValue)
        } else if config.clipSample {
            let r = Float(config.clipSampleRange)
            for i in 0..<count { x0[i] = min(r, max(-r, x0[i])) }
        }

        let variance = ((1 - alphaPrev) / (1 - alphaT)) * (1 - alphaT / alphaPrev)
        let std = eta * variance.squareRoot()
        if useClippedModelOutput {
            for i in 0..<count { eps[i] = (x[i] - sqrtAlpha * x0[i]) / sqrtBeta }
        }
        let direction = (1 - alphaPrev - std * std).squareRoot()
        let sqrtAlphaPrev = alphaPrev.squareRoot()
        var prev = [Float](repeating: 0, count: count)
        for i in 0..<count { prev[i] = sqrtAlphaPrev * x0[i] + direction * eps[i] }
        return (Tensor(shape: sample.shape, data: prev), eta > 0 ? std : 0, Tensor(shape: sample.shape, data: x0))
    }

    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        schedule.addNoise(original, noise: noise, timestep: timestep)
    }
}
