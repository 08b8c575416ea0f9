import Foundation
import Tensors
import Weights

/// diffusers' `LCMScheduler` (Luo et al., "Latent Consistency Models"): multistep consistency
/// sampling for LCM models and LCM-LoRAs, good pictures in 2–8 steps at low guidance.
///
/// Each step maps the sample to the model's estimate of the clean sample through the consistency
/// boundary conditions (c_skip, c_out), then, except at the last step, noises that estimate
/// afresh to the next timestep: every step but the last draws new noise.
///
/// Configured from a model's `scheduler_config.json` as diffusers' users do it,
/// `LCMScheduler.from_config(DDIMScheduler.from_config(file).config)`: beta schedule,
/// prediction types epsilon / v_prediction / sample, `rescale_betas_zero_snr`, `clip_sample` and
/// dynamic thresholding of x₀. `set_alpha_to_one` and `timestep_spacing` are accepted and have no
/// effect, as in diffusers (the step after the last timestep is never taken, and the timesteps
/// come from the `original_inference_steps` grid). Keys the file leaves out take DDIM's defaults
/// here where LCM's differ (`clip_sample`, the beta schedule); Stable Diffusion files name them.
public struct LCMScheduler: Scheduler {
    public typealias ViewState = NoState

    public let config: DDIMSchedulerConfig
    public let schedule: NoiseSchedule
    /// The size of the timestep grid the model was distilled on (diffusers'
    /// `original_inference_steps`); the timesteps are `steps` of its points.
    public let originalInferenceSteps: Int
    /// The factor on the timestep in the boundary conditions (diffusers' `timestep_scaling`).
    public let timestepScaling: Float
    public private(set) var timesteps: [Int] = []

    public var initNoiseSigma: Float { 1 }
    /// Every step but the last draws noise, so one step draws none.
    public var needsNoise: Bool { timesteps.count > 1 }
    public func drawsNoise(at timestep: Int) -> Bool { index(timestep) < timesteps.count - 1 }

    /// A scheduler for `steps` inference steps (1 to `originalInferenceSteps`).
    public init(config: DDIMSchedulerConfig, steps: Int, originalInferenceSteps: Int = 50,
                timestepScaling: Float = 10) throws {
        guard ["epsilon", "v_prediction", "sample"].contains(config.predictionType) else {
            throw SchedulerError.unsupported("prediction_type \"\(config.predictionType)\" with LCM")
        }
        self.config = config
        schedule = try NoiseSchedule(config: config)
        self.originalInferenceSteps = originalInferenceSteps
        self.timestepScaling = timestepScaling
        timesteps = try consistencyTimesteps(trainSteps: config.numTrainTimesteps, gridSize: originalInferenceSteps,
                                             steps: steps, sampler: "LCM")
    }

    public func makeViewState() -> NoState { NoState() }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout NoState,
                     noise: Tensor?) -> Tensor {
        step(modelOutput, timestep: timestep, sample: sample, noise: noise).prevSample
    }

    /// √ᾱ_prev · denoised and √(1 − ᾱ_prev); at the last step the denoised sample and 0.
    public func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                         state: inout NoState) -> (mean: Tensor, noiseScale: Float) {
        let parts = update(modelOutput, timestep: timestep, sample: sample)
        return (parts.mean, parts.noiseScale)
    }

    /// One LCM step, returning the next sample and the denoised sample (diffusers' `denoised`).
    /// `noise` is required except at the last step, where it is not used.
    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                     noise: Tensor?) -> (prevSample: Tensor, denoised: Tensor) {
        let parts = update(modelOutput, timestep: timestep, sample: sample)
        guard drawsNoise(at: timestep) else { return (parts.mean, parts.denoised) }
        guard let noise else { preconditionFailure("LCM needs noise at every step but the last") }
        return (parts.mean.addingNoise(noise, scale: parts.noiseScale), parts.denoised)
    }

    /// c_skip and c_out at `timestep` (σ_data = 0.5), in float32 as diffusers computes them.
    public func boundaryScalings(_ timestep: Int) -> (cSkip: Float, cOut: Float) {
        let scaled = Float(timestep) * timestepScaling
        let d = scaled * scaled + 0.25
        return ((1 / d) * 0.25, scaled / d.squareRoot())
    }

    private func update(_ modelOutput: Tensor, timestep t: Int,
                        sample: Tensor) -> (mean: Tensor, noiseScale: Float, denoised: Tensor) {
        precondition(modelOutput.shape == sample.shape, "LCM step: \(modelOutput.shape) vs \(sample.shape)")
        let i = index(t)
        let last = i == timesteps.count - 1
        // diffusers takes the last step's "previous" timestep to be the step's own; it only scales
        // noise, which the last step has none of
        let ac = schedule.alphasCumprod
        let alphaT = ac[t], alphaPrev = ac[last ? t : timesteps[i + 1]]
        var x0 = predictedOriginal(modelOutput.data, sample: sample.data, alphaT: alphaT,
                                   predictionType: config.predictionType)
        if config.thresholding {
            x0 = dynamicThreshold(x0, batch: sample.shape[0], ratio: config.dynamicThresholdingRatio,
                                  maxValue: config.sampleMaxValue)
        } else if config.clipSample {
            let r = Float(config.clipSampleRange)
            for k in x0.indices { x0[k] = min(r, max(-r, x0[k])) }
        }
        let (cSkip, cOut) = boundaryScalings(t)
        let x = sample.data
        let denoised = (0..<x.count).map { k in cOut * x0[k] + cSkip * x[k] }
        let denoisedTensor = Tensor(shape: sample.shape, data: denoised)
        guard !last else { return (denoisedTensor, 0, denoisedTensor) }
        let scale = alphaPrev.squareRoot()
        return (Tensor(shape: sample.shape, data: denoised.map { scale * $0 }), (1 - alphaPrev).squareRoot(),
                denoisedTensor)
    }

    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        schedule.addNoise(original, noise: noise, timestep: timestep)
    }

    private func index(_ t: Int) -> Int {
        guard let i = timesteps.firstIndex(of: t) else { preconditionFailure("timestep \(t) is not in the schedule") }
        return i
    }
}

/// The text-to-image timesteps of diffusers' LCM and TCD schedulers: the grid of `gridSize`
/// training timesteps k − 1, 2k − 1, …, n − 1 (k = n / gridSize), and of it, from the top,
/// the points at ⌊i · gridSize / steps⌋ for i < steps.
///
/// diffusers' img2img pipelines pass a `strength` < 1 that shrinks the grid itself before
/// choosing from it (so the chosen timesteps are not a tail of the text-to-image ones); this
/// program's img2img starts part-way through the text-to-image timesteps instead and does not
/// reproduce that choice.
func consistencyTimesteps(trainSteps n: Int, gridSize: Int, steps: Int, sampler: String) throws -> [Int] {
    guard gridSize >= 1 && gridSize <= n else {
        throw SchedulerError.unsupported("original_inference_steps \(gridSize) with \(n) training timesteps")
    }
    guard steps >= 1 && steps <= gridSize else {
        throw SchedulerError.invalidStepsOnGrid(steps, gridSize: gridSize, sampler: sampler)
    }
    let k = n / gridSize
    let spacing = Double(gridSize) / Double(steps)  // numpy's linspace(0, gridSize, steps, endpoint=False)
    return (0..<steps).map { i in
        let j = Int((Double(i) * spacing).rounded(.down))
        return (gridSize - j) * k - 1
    }
}

/// x₀ predicted from a model output, in float32 as diffusers' DDIM-family schedulers compute it.
func predictedOriginal(_ m: [Float], sample x: [Float], alphaT: Float, predictionType: String) -> [Float] {
    let sqrtAlpha = alphaT.squareRoot(), sqrtBeta = (1 - alphaT).squareRoot()
    switch predictionType {
    case "epsilon": return (0..<x.count).map { (x[$0] - sqrtBeta * m[$0]) / sqrtAlpha }
    case "sample": return m
    default: return (0..<x.count).map { sqrtAlpha * x[$0] - sqrtBeta * m[$0] }  // v_prediction
    }
}
