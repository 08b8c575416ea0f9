import Foundation

/// diffusers' `AutoencoderKL` configuration (`vae/config.json`). Defaults are the constructor's in
/// diffusers 0.42 (`models/autoencoders/autoencoder_kl.py`) — a one-block toy VAE, not SD's.
public struct AutoencoderKLConfig: JSONConfiguration, Equatable {
    public var className: String?
    public var inChannels: Int
    public var outChannels: Int
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var actFn: String
    public var latentChannels: Int
    public var normNumGroups: Int
    public var sampleSize: OneOrMany<Int>
    /// Latents are multiplied by this after encoding and divided by it before decoding.
    public var scalingFactor: Double
    /// Subtracted before scaling when set (SD3/Flux VAEs); nil for SD 1.x/2.x.
    public var shiftFactor: Double?
    public var latentsMean: [Double]?
    public var latentsStd: [Double]?
    public var forceUpcast: Bool
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    public var midBlockAddAttention: Bool

    public init(
        className: String? = "AutoencoderKL",
        inChannels: Int = 3,
        outChannels: Int = 3,
        downBlockTypes: [String] = ["DownEncoderBlock2D"],
        upBlockTypes: [String] = ["UpDecoderBlock2D"],
        blockOutChannels: [Int] = [64],
        layersPerBlock: Int = 1,
        actFn: String = "silu",
        latentChannels: Int = 4,
        normNumGroups: Int = 32,
        sampleSize: OneOrMany<Int> = 32,
        scalingFactor: Double = 0.18215,
        shiftFactor: Double? = nil,
        latentsMean: [Double]? = nil,
        latentsStd: [Double]? = nil,
        forceUpcast: Bool = true,
        useQuantConv: Bool = true,
        usePostQuantConv: Bool = true,
        midBlockAddAttention: Bool = true
    ) {
        self.className = className
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.downBlockTypes = downBlockTypes
        self.upBlockTypes = upBlockTypes
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.actFn = actFn
        self.latentChannels = latentChannels
        self.normNumGroups = normNumGroups
        self.sampleSize = sampleSize
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
        self.latentsMean = latentsMean
        self.latentsStd = latentsStd
        self.forceUpcast = forceUpcast
        self.useQuantConv = useQuantConv
        self.usePostQuantConv = usePostQuantConv
        self.midBlockAddAttention = midBlockAddAttention
    }

    enum CodingKeys: String, CodingKey {
        case className = "_class_name"
        case inChannels = "in_channels"
        case outChannels = "out_channels"
        case downBlockTypes = "down_block_types"
        case upBlockTypes = "up_block_types"
        case blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block"
        case actFn = "act_fn"
        case latentChannels = "latent_channels"
        case normNumGroups = "norm_num_groups"
        case sampleSize = "sample_size"
        case scalingFactor = "scaling_factor"
        case shiftFactor = "shift_factor"
        case latentsMean = "latents_mean"
        case latentsStd = "latents_std"
        case forceUpcast = "force_upcast"
        case useQuantConv = "use_quant_conv"
        case usePostQuantConv = "use_post_quant_conv"
        case midBlockAddAttention = "mid_block_add_attention"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AutoencoderKLConfig()
        className = try c.decodeIfPresent(String.self, forKey: .className)
        inChannels = try c.value(.inChannels, or: d.inChannels)
        outChannels = try c.value(.outChannels, or: d.outChannels)
        downBlockTypes = try c.value(.downBlockTypes, or: d.downBlockTypes)
        upBlockTypes = try c.value(.upBlockTypes, or: d.upBlockTypes)
        blockOutChannels = try c.value(.blockOutChannels, or: d.blockOutChannels)
        layersPerBlock = try c.value(.layersPerBlock, or: d.layersPerBlock)
        actFn = try c.value(.actFn, or: d.actFn)
        latentChannels = try c.value(.latentChannels, or: d.latentChannels)
        normNumGroups = try c.value(.normNumGroups, or: d.normNumGroups)
        sampleSize = try c.value(.sampleSize, or: d.sampleSize)
        scalingFactor = try c.value(.scalingFactor, or: d.scalingFactor)
        shiftFactor = try c.nullable(.shiftFactor, or: d.shiftFactor)
        latentsMean = try c.nullable(.latentsMean, or: d.latentsMean)
        latentsStd = try c.nullable(.latentsStd, or: d.latentsStd)
        forceUpcast = try c.value(.forceUpcast, or: d.forceUpcast)
        useQuantConv = try c.value(.useQuantConv, or: d.useQuantConv)
        usePostQuantConv = try c.value(.usePostQuantConv, or: d.usePostQuantConv)
        midBlockAddAttention = try c.value(.midBlockAddAttention, or: d.midBlockAddAttention)
    }

    /// Image pixels per latent pixel: 2^(number of blocks − 1), 8 for SD.
    public var downsamplingFactor: Int { 1 << max(0, blockOutChannels.count - 1) }
}

extension AutoencoderKLConfig: ConsistencyChecked {
    func inconsistency() -> (key: String, problem: String)? {
        if let problem = sizeProblem([
            ("block_out_channels", [blockOutChannels.count], 1...16), ("block_out_channels", blockOutChannels, 1...(1 << 16)),
            ("in_channels", [inChannels], 1...1024), ("out_channels", [outChannels], 1...1024),
            ("latent_channels", [latentChannels], 1...1024), ("layers_per_block", [layersPerBlock], 0...64),
            ("norm_num_groups", [normNumGroups], 1...4096), ("sample_size", sampleSize.all, 1...(1 << 16)),
        ]) {
            return problem
        }
        for (key, value) in [("scaling_factor", scalingFactor), ("shift_factor", shiftFactor ?? 0)] + (latentsMean ?? []).map({ ("latents_mean", $0) })
            + (latentsStd ?? []).map({ ("latents_std", $0) }) where !value.isFinite {
            return (key, "is \(value); it must be a finite number")
        }
        if downBlockTypes.count != blockOutChannels.count {
            return ("down_block_types", "has \(downBlockTypes.count) entries but block_out_channels has "
                + "\(blockOutChannels.count)")
        }
        if upBlockTypes.count != blockOutChannels.count {
            return ("up_block_types", "has \(upBlockTypes.count) entries but block_out_channels has "
                + "\(blockOutChannels.count)")
        }
        return nil
    }
}
