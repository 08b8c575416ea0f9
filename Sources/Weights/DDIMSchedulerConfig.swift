import Foundation

/// diffusers' `DDIMScheduler` configuration (`scheduler/scheduler_config.json`). Defaults are the
/// constructor's in diffusers 0.42 (`schedulers/scheduling_ddim.py`); SD's files override most of
/// them (scaled_linear 0.00085…0.012, set_alpha_to_one false, steps_offset 1, clip_sample false).
/// Other schedulers' files (e.g. SD 1.5's PNDMScheduler) share these keys and decode too; check
/// `className` to know which one the model shipped with.
public struct DDIMSchedulerConfig: JSONConfiguration, Equatable {
    /// `_class_name` as written in the file (nil if absent).
    public var className: String?
    public var numTrainTimesteps: Int
    public var betaStart: Double
    public var betaEnd: Double
    /// "linear", "scaled_linear" or "squaredcos_cap_v2".
    public var betaSchedule: String
    /// Explicit betas that replace the schedule when given.
    public var trainedBetas: [Double]?
    public var clipSample: Bool
    public var setAlphaToOne: Bool
    public var stepsOffset: Int
    /// "epsilon", "sample" or "v_prediction".
    public var predictionType: String
    public var thresholding: Bool
    public var dynamicThresholdingRatio: Double
    public var clipSampleRange: Double
    public var sampleMaxValue: Double
    /// "leading", "trailing" or "linspace".
    public var timestepSpacing: String
    /// Whether the file named `timestep_spacing` (other schedulers built from this configuration,
    /// as diffusers' `from_config` builds them, use their own default when it did not).
    public var timestepSpacingIsExplicit: Bool
    public var rescaleBetasZeroSnr: Bool

    public init(
        className: String? = "DDIMScheduler",
        numTrainTimesteps: Int = 1000,
        betaStart: Double = 0.0001,
        betaEnd: Double = 0.02,
        betaSchedule: String = "linear",
        trainedBetas: [Double]? = nil,
        clipSample: Bool = true,
        setAlphaToOne: Bool = true,
        stepsOffset: Int = 0,
        predictionType: String = "epsilon",
        thresholding: Bool = false,
        dynamicThresholdingRatio: Double = 0.995,
        clipSampleRange: Double = 1,
        sampleMaxValue: Double = 1,
        timestepSpacing: String = "leading",
        timestepSpacingIsExplicit: Bool = true,
        rescaleBetasZeroSnr: Bool = false
    ) {
        self.className = className
        self.numTrainTimesteps = numTrainTimesteps
        self.betaStart = betaStart
        self.betaEnd = betaEnd
        self.betaSchedule = betaSchedule
        self.trainedBetas = trainedBetas
        self.clipSample = clipSample
        self.setAlphaToOne = setAlphaToOne
        self.stepsOffset = stepsOffset
        self.predictionType = predictionType
        self.thresholding = thresholding
        self.dynamicThresholdingRatio = dynamicThresholdingRatio
        self.clipSampleRange = clipSampleRange
        self.sampleMaxValue = sampleMaxValue
        self.timestepSpacing = timestepSpacing
        self.timestepSpacingIsExplicit = timestepSpacingIsExplicit
        self.rescaleBetasZeroSnr = rescaleBetasZeroSnr
    }

    /// Stable Diffusion 1.x/2.x's settings (as in their scheduler_config.json, with DDIM; the file
    /// names no `timestep_spacing`).
    public static let stableDiffusion = DDIMSchedulerConfig(
        betaStart: 0.00085, betaEnd: 0.012, betaSchedule: "scaled_linear", clipSample: false,
        setAlphaToOne: false, stepsOffset: 1, timestepSpacingIsExplicit: false)

    enum CodingKeys: String, CodingKey {
        case className = "_class_name"
        case numTrainTimesteps = "num_train_timesteps"
        case betaStart = "beta_start"
        case betaEnd = "beta_end"
        case betaSchedule = "beta_schedule"
        case trainedBetas = "trained_betas"
        case clipSample = "clip_sample"
        case setAlphaToOne = "set_alpha_to_one"
        case stepsOffset = "steps_offset"
        case predictionType = "prediction_type"
        case thresholding
        case dynamicThresholdingRatio = "dynamic_thresholding_ratio"
        case clipSampleRange = "clip_sample_range"
        case sampleMaxValue = "sample_max_value"
        case timestepSpacing = "timestep_spacing"
        case rescaleBetasZeroSnr = "rescale_betas_zero_snr"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = DDIMSchedulerConfig()
        className = try c.decodeIfPresent(String.self, forKey: .className)
        numTrainTimesteps = try c.value(.numTrainTimesteps, or: d.numTrainTimesteps)
        betaStart = try c.value(.betaStart, or: d.betaStart)
        betaEnd = try c.value(.betaEnd, or: d.betaEnd)
        betaSchedule = try c.value(.betaSchedule, or: d.betaSchedule)
        trainedBetas = try c.nullable(.trainedBetas, or: d.trainedBetas)
        clipSample = try c.value(.clipSample, or: d.clipSample)
        setAlphaToOne = try c.value(.setAlphaToOne, or: d.setAlphaToOne)
        stepsOffset = try c.value(.stepsOffset, or: d.stepsOffset)
        predictionType = try c.value(.predictionType, or: d.predictionType)
        thresholding = try c.value(.thresholding, or: d.thresholding)
        dynamicThresholdingRatio = try c.value(.dynamicThresholdingRatio, or: d.dynamicThresholdingRatio)
        clipSampleRange = try c.value(.clipSampleRange, or: d.clipSampleRange)
        sampleMaxValue = try c.value(.sampleMaxValue, or: d.sampleMaxValue)
        timestepSpacing = try c.value(.timestepSpacing, or: d.timestepSpacing)
        timestepSpacingIsExplicit = try c.decodeIfPresent(String.self, forKey: .timestepSpacing) != nil
        rescaleBetasZeroSnr = try c.value(.rescaleBetasZeroSnr, or: d.rescaleBetasZeroSnr)
    }

    /// Writes the keys diffusers writes; `timestep_spacing` only when it was named.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(className, forKey: .className)
        try c.encode(numTrainTimesteps, forKey: .numTrainTimesteps)
        try c.encode(betaStart, forKey: .betaStart)
        try c.encode(betaEnd, forKey: .betaEnd)
        try c.encode(betaSchedule, forKey: .betaSchedule)
        try c.encode(trainedBetas, forKey: .trainedBetas)
        try c.encode(clipSample, forKey: .clipSample)
        try c.encode(setAlphaToOne, forKey: .setAlphaToOne)
        try c.encode(stepsOffset, forKey: .stepsOffset)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encode(thresholding, forKey: .thresholding)
        try c.encode(dynamicThresholdingRatio, forKey: .dynamicThresholdingRatio)
        try c.encode(clipSampleRange, forKey: .clipSampleRange)
        try c.encode(sampleMaxValue, forKey: .sampleMaxValue)
        if timestepSpacingIsExplicit { try c.encode(timestepSpacing, forKey: .timestepSpacing) }
        try c.encode(rescaleBetasZeroSnr, forKey: .rescaleBetasZeroSnr)
    }
}

extension DDIMSchedulerConfig: ConsistencyChecked {
    /// Largest `num_train_timesteps` accepted.
    static let maxTrainTimesteps = 100_000

    func inconsistency() -> (key: String, problem: String)? {
        if numTrainTimesteps <= 0 { return ("num_train_timesteps", "must be positive, not \(numTrainTimesteps)") }
        // Bounded before the schedule's arrays are allocated from it (every published model has 1000).
        if numTrainTimesteps > Self.maxTrainTimesteps {
            return ("num_train_timesteps", "is \(numTrainTimesteps); it must be at most \(Self.maxTrainTimesteps)")
        }
        if stepsOffset < 0 || stepsOffset >= numTrainTimesteps {
            return ("steps_offset", "is \(stepsOffset); it must be between 0 and num_train_timesteps - 1 "
                + "(\(numTrainTimesteps - 1))")
        }
        // A beta is a noise variance per step: outside [0, 1) the cumulative alphas turn negative or
        // zero, and every sigma derived from them NaN or infinite (a trap when made a timestep).
        if betaSchedule != "squaredcos_cap_v2" && trainedBetas == nil {
            // Above 0 too: a first beta of 0 gives a first sigma of 0, whose logarithm the Karras and
            // DPM schedules take (beta_start 0 trapped; found by fuzzing).
            for (key, value) in [("beta_start", betaStart), ("beta_end", betaEnd)] where !(value > 0 && value < 1) {
                return (key, "is \(value); it must be above 0 and below 1")
            }
        }
        // Betas in range can still be too large together: the cumulative product of 1 − beta must
        // not underflow (beta_start 0.8 made it 0 in float32, the sigmas infinite and DPM++ Karras
        // trap; found by fuzzing).
        let n = numTrainTimesteps, step = 1 / Double(max(1, n - 1))
        let betas: [Double]
        switch (trainedBetas, betaSchedule) {
        case let (trained?, _): betas = trained
        case (nil, "linear"): betas = (0..<n).map { betaStart + (betaEnd - betaStart) * Double($0) * step }
        case (nil, "scaled_linear"):
            let (a, b) = (betaStart.squareRoot(), betaEnd.squareRoot())
            betas = (0..<n).map { let r = a + (b - a) * Double($0) * step; return r * r }
        default: betas = []
        }
        let finalAlpha = betas.reduce(1.0) { $0 * (1 - $1) }
        if finalAlpha < 1e-30 {
            return (trainedBetas != nil ? "trained_betas" : "beta_start", "with these betas the cumulative product of "
                + "1 − beta falls to \(finalAlpha) by the last timestep (below 1e-30), so the noise levels would be "
                + "infinite; published schedules end near 0.005")
        }
        for (key, value) in [("dynamic_thresholding_ratio", dynamicThresholdingRatio),
                             ("clip_sample_range", clipSampleRange), ("sample_max_value", sampleMaxValue)]
            where !value.isFinite {
            return (key, "is \(value); it must be a finite number")
        }
        if let betas = trainedBetas, betas.count != numTrainTimesteps {
            return ("trained_betas", "has \(betas.count) values but num_train_timesteps is \(numTrainTimesteps)")
        }
        if let betas = trainedBetas {
            if let (i, beta) = betas.enumerated().first(where: { !($0.element > 0 && $0.element < 1) }) {
                return ("trained_betas", "has \(beta) at index \(i); every beta must be above 0 and below 1")
            }
        }
        return nil
    }
}
