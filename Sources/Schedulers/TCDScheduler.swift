import Foundation
import Tensors
import Weights

/// diffusers' `TCDScheduler` (Zheng et al., "Trajectory Consistency Distillation"), strategic
/// stochastic sampling for TCD models and LoRAs, 2–8 steps.
///
/// Each step predicts x₀ and ε, goes back along the trajectory to the earlier timestep
/// s = ⌊(1 − γ) · t_prev⌋ (the "predicted noised sample" x_s = √ᾱ_s · x₀ + √(1 − ᾱ_s) · ε), and
/// with γ > 0 noises x_s forward to t_prev with fresh noise — except at the last step, which
/// returns x_s (with t_prev = 0) and draws nothing. γ is the renderer's eta (diffusers' `eta`
/// argument of `step`): 0 is deterministic, 1 the most stochastic; TCD's model cards use 0.3.
///
/// The timesteps are LCM's (`original_inference_steps` grid, see `consistencyTimesteps`). Configured
/// as `TCDScheduler.from_config(DDIMScheduler.from_config(file).config)`: beta schedule, prediction
/// types epsilon / v_prediction / sample and `rescale_betas_zero_snr`. As in diffusers, x₀ is never
/// clipped or thresholded, and `set_alpha_to_one` and `timestep_spacing` have no effect.
public struct TCDScheduler: Scheduler {
    public typealias ViewState = NoState

    public let config: DDIMSchedulerConfig
    public let schedule: NoiseSchedule
    /// diffusers' `original_inference_steps`: the grid the timesteps are chosen from.
    public let originalInferenceSteps: Int
    /// γ in [0, 1].
    public let gamma: Float
    public private(set) var timesteps: [Int] = []

    public var initNoiseSigma: Float { 1 }
    /// With γ > 0 every step but the last draws noise.
    public var needsNoise: Bool { gamma > 0 && timesteps.count > 1 }
    public func drawsNoise(at timestep: Int) -> Bool { gamma > 0 && index(timestep) < timesteps.count - 1 }

    /// A scheduler for `steps` inference steps (1 to `originalInferenceSteps`) with γ = `gamma`.
    public init(config: DDIMSchedulerConfig, steps: Int, gamma: Float = 0.3, originalInferenceSteps: Int = 50) throws {
        guard ["epsilon", "v_prediction", "sample"].contains(config.predictionType) else {
            throw SchedulerError.unsupported("prediction_type \"\(config.predictionType)\" with TCD")
        }
        guard gamma >= 0 && gamma <= 1 else { throw SchedulerError.invalidEta(gamma, sampler: "TCD", range: "0 to 1") }
        self.config = config
        schedule = try NoiseSchedule(config: config)
        self.gamma = gamma
        self.originalInferenceSteps = originalInferenceSteps
        timesteps = try consistencyTimesteps(trainSteps: config.numTrainTimesteps, gridSize: originalInferenceSteps,
                                             steps: steps, sampler: "TCD")
    }

    public func makeViewState() -> NoState { NoState() }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout NoState,
                     noise: Tensor?) -> Tensor {
        step(modelOutput, timestep: timestep, sample: sample, noise: noise).prevSample
    }

    /// √(ᾱ_prev/ᾱ_s) · x_s and √(1 − ᾱ_prev/ᾱ_s) when the step draws noise, else x_s and 0.
    public func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                         state: inout NoState) -> (mean: Tensor, noiseScale: Float) {
        let parts = update(modelOutput, timestep: timestep, sample: sample)
        return (parts.mean, parts.noiseScale)
    }

    /// One TCD step, returning the next sample and x_s (diffusers' `pred_noised_sample`).
    /// `noise` is required when `drawsNoise(at: timestep)`.
    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                     noise: Tensor?) -> (prevSample: Tensor, predNoisedSample: Tensor) {
        let parts = update(modelOutput, timestep: timestep, sample: sample)
        guard drawsNoise(at: timestep) else { return (parts.mean, parts.noised) }
        guard let noise else { preconditionFailure("TCD with gamma > 0 needs noise at every step but the last") }
        return (parts.mean.addingNoise(noise, scale: parts.noiseScale), parts.noised)
    }

    /// The timestep s that a step from `timestep` predicts back to.
    public func intermediateTimestep(after timestep: Int) -> Int {
        let i = index(timestep)
        let prev = i < timesteps.count - 1 ? timesteps[i + 1] : 0
        // float32, as diffusers' torch.floor((1 - eta) * prev_timestep)
        return Int((Float(1 - Double(gamma)) * Float(prev)).rounded(.down))
    }

    private func update(_ modelOutput: Tensor, timestep t: Int,
                        sample: Tensor) -> (mean: Tensor, noiseScale: Float, noised: Tensor) {
        precondition(modelOutput.shape == sample.shape, "TCD step: \(modelOutput.shape) vs \(sample.shape)")
        let i = index(t)
        let prev = i < timesteps.count - 1 ? timesteps[i + 1] : 0
        let ac = schedule.alphasCumprod
        let alphaT = ac[t], alphaPrev = ac[prev], alphaS = ac[intermediateTimestep(after: t)]
        let x = sample.data, m = modelOutput.data
        let x0 = predictedOriginal(m, sample: x, alphaT: alphaT, predictionType: config.predictionType)
        let sqrtAlpha = alphaT.squareRoot(), sqrtBeta = (1 - alphaT).squareRoot()
        let eps: [Float]
        switch config.predictionType {
        case "epsilon": eps = m
        case "sample": eps = (0..<x.count).map { (x[$0] - sqrtAlpha * x0[$0]) / sqrtBeta }
        default: eps = (0..<x.count).map { sqrtAlpha * m[$0] + sqrtBeta * x[$0] }  // v_prediction
        }
        let a = alphaS.squareRoot(), b = (1 - alphaS).squareRoot()
        let noised = Tensor(shape: sample.shape, data: (0..<x.count).map { a * x0[$0] + b * eps[$0] })
        guard drawsNoise(at: t) else { return (noised, 0, noised) }
        let ratio = alphaPrev / alphaS
        let scale = ratio.squareRoot()
        return (Tensor(shape: sample.shape, data: noised.data.map { scale * $0 }), (1 - ratio).squareRoot(), noised)
    }

    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        schedule.addNoise(original, noise: noise, timestep: timestep)
    }

    private func index(_ t: Int) -> Int {
        guard let i = timesteps.firstIndex(of: t) else { preconditionFailure("timestep \(t) is not in the schedule") }
        return i
    }
}
