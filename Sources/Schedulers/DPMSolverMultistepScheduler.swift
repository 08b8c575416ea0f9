import Foundation
import Tensors
import Weights

/// diffusers' `DPMSolverMultistepScheduler` as DPM-Solver++(2M) (Lu et al., "DPM-Solver++: Fast
/// Solver for Guided Sampling of Diffusion Probabilistic Models"): `algorithm_type` "dpmsolver++",
/// `solver_order` 2, `solver_type` "midpoint", `lower_order_final`, `final_sigmas_type` "zero",
/// with or without Karras sigmas (`use_karras_sigmas`) — the sampler AUTOMATIC1111 calls
/// "DPM++ 2M" / "DPM++ 2M Karras". Good pictures in 20–25 steps where DDIM wants ~50.
/// (Karras timesteps are always rounded to whole steps; diffusers keeps them fractional for the
/// squaredcos_cap_v2 schedule only.)
///
/// Configured from a model's `scheduler_config.json` the way diffusers' `from_config` does it: the
/// file's keys, this scheduler's defaults for the rest (so a file without `timestep_spacing`
/// spaces "linspace", not DDIM's "leading").
public struct DPMSolverMultistepScheduler: Scheduler {
    /// One window's history: the previous step's data prediction and where the window is in the
    /// schedule (views step in lockstep, but each keeps its own history, as diffusers snapshots the
    /// whole scheduler per view batch).
    public struct ViewState: Sendable {
        /// x₀ predicted at the previous step (nil before the first step).
        public var previousPrediction: Tensor?
        /// Index into `timesteps` of the next step (nil: found from the first step's timestep).
        public var nextIndex: Int?
        public init() {}
    }

    public let config: DDIMSchedulerConfig
    public let karras: Bool
    /// ᾱ per training timestep (the last one 2⁻²⁴ instead of 0 under zero terminal SNR, as diffusers).
    public let alphasCumprod: [Float]
    public private(set) var timesteps: [Int] = []
    /// σ = √((1 − ᾱ)/ᾱ) at each timestep, and 0 after the last.
    public private(set) var sigmas: [Float] = []

    public var initNoiseSigma: Float { 1 }
    public var needsNoise: Bool { false }

    /// A scheduler set up for `steps` inference steps.
    public init(config: DDIMSchedulerConfig, steps: Int, karras: Bool = false) throws {
        guard ["epsilon", "v_prediction", "sample"].contains(config.predictionType) else {
            throw SchedulerError.unsupported("prediction_type \"\(config.predictionType)\"")
        }
        self.config = config
        self.karras = karras
        alphasCumprod = try NoiseSchedule.alphasCumprodForSigmas(config)
        try setTimesteps(steps)
    }

    /// `timestep_spacing` as `from_config` resolves it for this class.
    public var timestepSpacing: String { config.timestepSpacing(classDefault: "linspace") }

    /// Chooses the timesteps and σ for `steps` inference steps.
    public mutating func setTimesteps(_ steps: Int) throws {
        let n = config.numTrainTimesteps
        guard steps >= 1 && steps <= n else { throw SchedulerError.invalidSteps(steps, trainTimesteps: n) }
        let trainSigmas = alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        var ts: [Int]
        switch timestepSpacing {
        case "linspace":
            // numpy's linspace(0, n − 1, steps + 1): i · step, the last point exactly n − 1
            let step = Double(n - 1) / Double(steps)
            ts = (1...steps).reversed().map { i in
                i == steps ? n - 1 : Int((Double(i) * step).rounded(.toNearestOrEven))
            }
        case "leading":
            let ratio = n / (steps + 1)
            ts = (1...steps).reversed().map { $0 * ratio + config.stepsOffset }
        case "trailing":
            ts = trailingTimesteps(trainSteps: n, steps: steps)
        default:
            throw SchedulerError.unsupported("timestep_spacing \"\(timestepSpacing)\"")
        }
        var sig: [Float]
        if karras {
            let logSigmas = trainSigmas.map { Float(log(Double($0))) }
            let lo = Double(trainSigmas[0]), hi = Double(trainSigmas[n - 1])
            let minInv = pow(lo, 1 / 7.0), maxInv = pow(hi, 1 / 7.0)
            let k = (0..<steps).map { i -> Double in
                let ramp = steps == 1 ? 0 : (i == steps - 1 ? 1 : Double(i) * (1 / Double(steps - 1)))
                return pow(maxInv + ramp * (minInv - maxInv), 7)
            }
            ts = k.map { Int(timestepOf(sigma: $0, logSigmas: logSigmas).rounded(.toNearestOrEven)) }
            sig = k.map { Float($0) }
        } else {
            sig = ts.map { trainSigmas[$0] }
        }
        timesteps = ts
        sigmas = sig + [0]
    }

    public func makeViewState() -> ViewState { ViewState() }

    /// The previous data prediction: DPM-Solver's update is per pixel, so a window that moved
    /// can take its history from whichever windows covered its pixels the step before.
    public func pixelHistory(of state: ViewState) -> Tensor? { state.previousPrediction }

    public func checkpoint(of state: ViewState) -> (history: Tensor?, index: Int?) { (state.previousPrediction, state.nextIndex) }

    public func restoredViewState(history: Tensor?, index: Int?) -> ViewState {
        var state = ViewState()
        (state.previousPrediction, state.nextIndex) = (history, index)
        return state
    }

    public func viewState(pixelHistory: Tensor?, index: Int) -> ViewState {
        var state = ViewState()
        state.previousPrediction = pixelHistory
        state.nextIndex = index
        return state
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    /// One DPM-Solver++ step: first order at the first and the last step, second order (midpoint)
    /// in between, using the window's previous data prediction.
    public func step(_ modelOutput: Tensor, timestep t: Int, sample: Tensor, state: inout ViewState,
                     noise: Tensor?) -> Tensor {
        precondition(modelOutput.shape == sample.shape, "DPM-Solver step: \(modelOutput.shape) vs \(sample.shape)")
        let index = state.nextIndex ?? indexOf(t)
        let x0 = dataPrediction(modelOutput, sample: sample, index: index)
        let (alphaT, sigmaT) = alphaSigma(sigmas[index + 1])
        let (alphaS, sigmaS) = alphaSigma(sigmas[index])
        let lambdaT = logf(alphaT) - logf(sigmaT)
        let lambdaS = logf(alphaS) - logf(sigmaS)
        let h = lambdaT - lambdaS
        let ratio = sigmaT / sigmaS, gain = alphaT * (expf(-h) - 1)
        let x = sample.data, m0 = x0.data
        var out = [Float](repeating: 0, count: x.count)
        let last = index == timesteps.count - 1  // lower_order_final: σ reaches 0 there
        if let previous = state.previousPrediction, !last, index >= 1 {
            let (alphaS1, sigmaS1) = alphaSigma(sigmas[index - 1])
            let lambdaS1 = logf(alphaS1) - logf(sigmaS1)
            let r0 = (lambdaS - lambdaS1) / h
            let m1 = previous.data, inverseR0 = 1 / r0
            for i in 0..<x.count {
                let d1 = inverseR0 * (m0[i] - m1[i])
                out[i] = ratio * x[i] - gain * m0[i] - 0.5 * gain * d1
            }
        } else {
            for i in 0..<x.count { out[i] = ratio * x[i] - gain * m0[i] }
        }
        state.previousPrediction = x0
        state.nextIndex = index + 1
        return Tensor(shape: sample.shape, data: out)
    }

    /// x₀ from the model output at step `index` (`convert_model_output` of DPM-Solver++).
    func dataPrediction(_ modelOutput: Tensor, sample: Tensor, index: Int) -> Tensor {
        let (alpha, sigma) = alphaSigma(sigmas[index])
        let x = sample.data, m = modelOutput.data
        var x0: [Float]
        switch config.predictionType {
        case "epsilon": x0 = zip(x, m).map { ($0 - sigma * $1) / alpha }
        case "sample": x0 = m
        default: x0 = zip(x, m).map { alpha * $0 - sigma * $1 }  // v_prediction
        }
        if config.thresholding {
            x0 = dynamicThreshold(x0, batch: sample.shape[0], ratio: config.dynamicThresholdingRatio,
                                  maxValue: config.sampleMaxValue)
        }
        return Tensor(shape: sample.shape, data: x0)
    }

    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        precondition(original.shape == noise.shape, "addNoise: \(original.shape) vs \(noise.shape)")
        let (a, s) = alphaSigma(sigmas[indexOf(timestep)])
        return Tensor(shape: original.shape, data: zip(original.data, noise.data).map { a * $0 + s * $1 })
    }

    /// The step index of `t` (diffusers' `index_for_timestep` without a begin index: the first
    /// match, the second when `t` occurs twice, the last step when it does not occur).
    func indexOf(_ t: Int) -> Int {
        let matches = timesteps.indices.filter { timesteps[$0] == t }
        if matches.isEmpty { return timesteps.count - 1 }
        return matches.count > 1 ? matches[1] : matches[0]
    }

    /// α_t = 1/√(σ² + 1) and σ_t = σ α_t.
    private func alphaSigma(_ sigma: Float) -> (Float, Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }
}

/// The (fractional) training timestep whose log σ is `sigma`'s, by linear interpolation in log σ
/// (diffusers' `_sigma_to_t`).
private func timestepOf(sigma: Double, logSigmas: [Float]) -> Double {
    let logSigma = log(max(sigma, 1e-10))
    var low = 0
    for (i, l) in logSigmas.enumerated() where logSigma - Double(l) >= 0 { low = i }
    low = min(low, logSigmas.count - 2)
    let lo = Double(logSigmas[low]), hi = Double(logSigmas[low + 1])
    let w = min(max((lo - logSigma) / (lo - hi), 0), 1)
    return (1 - w) * Double(low) + w * Double(low + 1)
}
