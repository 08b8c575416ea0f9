import Foundation

/// diffusers' `AutoencoderTiny` configuration (`config.json` of a TAESD folder such as
/// `madebyollin/taesd`). Defaults are the constructor's in diffusers 0.42
/// (`models/autoencoders/autoencoder_tiny.py`), which are TAESD's own: so a TAESD weight file
/// without a config.json beside it loads with `AutoencoderTinyConfig()`.
public struct AutoencoderTinyConfig: JSONConfiguration, Equatable {
    public var className: String?
    public var inChannels: Int
    public var outChannels: Int
    /// Channels of each encoder stage (diffusers runs only lists whose entries are all equal).
    public var encoderBlockOutChannels: [Int]
    /// Channels of each decoder stage (likewise all equal).
    public var decoderBlockOutChannels: [Int]
    /// Activation inside the blocks and after the decoder's first convolution ("relu" for TAESD);
    /// each block's output activation is always ReLU.
    public var actFn: String
    /// The decoder's resize between stages ("nearest" for TAESD).
    public var upsampleFn: String
    public var latentChannels: Int
    /// The decoder's resize factor between stages (2 for TAESD).
    public var upsamplingScalingFactor: Int
    /// Blocks per encoder stage, each stage after the first starting with a stride-2 convolution.
    public var numEncoderBlocks: [Int]
    /// Blocks per decoder stage, each stage but the last followed by an upsampling and a convolution.
    public var numDecoderBlocks: [Int]
    /// `scale_latents`/`unscale_latents` (latents to and from [0, 1] for storage as bytes):
    /// `x / (2 · magnitude) + shift`. Not used by `encode`/`decode`.
    public var latentMagnitude: Double
    public var latentShift: Double
    public var forceUpcast: Bool
    /// 1.0 for TAESD: its latents are SD's scaled latents already, so the pipelines' multiply and
    /// divide by it change nothing.
    public var scalingFactor: Double
    /// Registered by diffusers but not used by `AutoencoderTiny` or the SD pipelines.
    public var shiftFactor: Double

    public init(
        className: String? = "AutoencoderTiny",
        inChannels: Int = 3,
        outChannels: Int = 3,
        encoderBlockOutChannels: [Int] = [64, 64, 64, 64],
        decoderBlockOutChannels: [Int] = [64, 64, 64, 64],
        actFn: String = "relu",
        upsampleFn: String = "nearest",
        latentChannels: Int = 4,
        upsamplingScalingFactor: Int = 2,
        numEncoderBlocks: [Int] = [1, 3, 3, 3],
        numDecoderBlocks: [Int] = [3, 3, 3, 1],
        latentMagnitude: Double = 3,
        latentShift: Double = 0.5,
        forceUpcast: Bool = false,
        scalingFactor: Double = 1.0,
        shiftFactor: Double = 0.0
    ) {
        self.className = className
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.encoderBlockOutChannels = encoderBlockOutChannels
        self.decoderBlockOutChannels = decoderBlockOutChannels
        self.actFn = actFn
        self.upsampleFn = upsampleFn
        self.latentChannels = latentChannels
        self.upsamplingScalingFactor = upsamplingScalingFactor
        self.numEncoderBlocks = numEncoderBlocks
        self.numDecoderBlocks = numDecoderBlocks
        self.latentMagnitude = latentMagnitude
        self.latentShift = latentShift
        self.forceUpcast = forceUpcast
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
    }

    enum CodingKeys: String, CodingKey {
        case className = "_class_name"
        case inChannels = "in_channels"
        case outChannels = "out_channels"
        case encoderBlockOutChannels = "encoder_block_out_channels"
        case decoderBlockOutChannels = "decoder_block_out_channels"
        case actFn = "act_fn"
        case upsampleFn = "upsample_fn"
        case latentChannels = "latent_channels"
        case upsamplingScalingFactor = "upsampling_scaling_factor"
        case numEncoderBlocks = "num_encoder_blocks"
        case numDecoderBlocks = "num_decoder_blocks"
        case latentMagnitude = "latent_magnitude"
        case latentShift = "latent_shift"
        case forceUpcast = "force_upcast"
        case scalingFactor = "scaling_factor"
        case shiftFactor = "shift_factor"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AutoencoderTinyConfig()
        className = try c.decodeIfPresent(String.self, forKey: .className)
        inChannels = try c.value(.inChannels, or: d.inChannels)
        outChannels = try c.value(.outChannels, or: d.outChannels)
        encoderBlockOutChannels = try c.value(.encoderBlockOutChannels, or: d.encoderBlockOutChannels)
        decoderBlockOutChannels = try c.value(.decoderBlockOutChannels, or: d.decoderBlockOutChannels)
        actFn = try c.value(.actFn, or: d.actFn)
        upsampleFn = try c.value(.upsampleFn, or: d.upsampleFn)
        latentChannels = try c.value(.latentChannels, or: d.latentChannels)
        upsamplingScalingFactor = try c.value(.upsamplingScalingFactor, or: d.upsamplingScalingFactor)
        numEncoderBlocks = try c.value(.numEncoderBlocks, or: d.numEncoderBlocks)
        numDecoderBlocks = try c.value(.numDecoderBlocks, or: d.numDecoderBlocks)
        latentMagnitude = try c.value(.latentMagnitude, or: d.latentMagnitude)
        latentShift = try c.value(.latentShift, or: d.latentShift)
        forceUpcast = try c.value(.forceUpcast, or: d.forceUpcast)
        scalingFactor = try c.value(.scalingFactor, or: d.scalingFactor)
        shiftFactor = try c.value(.shiftFactor, or: d.shiftFactor)
    }

    /// Image pixels per latent pixel: `upsampling_scaling_factor`^(decoder stages − 1), 8 for TAESD.
    public var downsamplingFactor: Int {
        (0..<max(0, numDecoderBlocks.count - 1)).reduce(1) { r, _ in r * upsamplingScalingFactor }
    }
}

extension AutoencoderTinyConfig: ConsistencyChecked {
    func inconsistency() -> (key: String, problem: String)? {
        if encoderBlockOutChannels.count != numEncoderBlocks.count {
            return ("encoder_block_out_channels", "has \(encoderBlockOutChannels.count) entries but "
                + "num_encoder_blocks has \(numEncoderBlocks.count)")
        }
        if decoderBlockOutChannels.count != numDecoderBlocks.count {
            return ("decoder_block_out_channels", "has \(decoderBlockOutChannels.count) entries but "
                + "num_decoder_blocks has \(numDecoderBlocks.count)")
        }
        if let problem = sizeProblem([
            ("num_encoder_blocks", [numEncoderBlocks.count], 1...16), ("num_decoder_blocks", [numDecoderBlocks.count], 1...16),
            ("num_encoder_blocks", numEncoderBlocks, 0...64), ("num_decoder_blocks", numDecoderBlocks, 0...64),
            ("encoder_block_out_channels", encoderBlockOutChannels, 1...(1 << 16)),
            ("decoder_block_out_channels", decoderBlockOutChannels, 1...(1 << 16)),
            ("in_channels", [inChannels], 1...1024), ("out_channels", [outChannels], 1...1024),
            ("latent_channels", [latentChannels], 1...1024), ("upsampling_scaling_factor", [upsamplingScalingFactor], 1...16),
        ]) {
            return problem
        }
        for (key, value) in [("latent_magnitude", latentMagnitude), ("latent_shift", latentShift),
                             ("scaling_factor", scalingFactor), ("shift_factor", shiftFactor)] where !value.isFinite {
            return (key, "is \(value); it must be a finite number")
        }
        for (key, list) in [("num_encoder_blocks", numEncoderBlocks), ("num_decoder_blocks", numDecoderBlocks)] {
            if list.isEmpty { return (key, "is empty") }
            if list.contains(where: { $0 < 0 }) { return (key, "has a negative block count") }
        }
        for (key, value) in [("in_channels", inChannels), ("out_channels", outChannels),
                             ("latent_channels", latentChannels), ("upsampling_scaling_factor", upsamplingScalingFactor)]
            where value < 1 {
            return (key, "must be at least 1")
        }
        for (key, list) in [("encoder_block_out_channels", encoderBlockOutChannels),
                            ("decoder_block_out_channels", decoderBlockOutChannels)] {
            if list.contains(where: { $0 < 1 }) { return (key, "must be positive") }
            // diffusers' EncoderTiny/DecoderTiny build every stage's convolutions with that stage's
            // channels on both sides, so a model with differing entries cannot run there either.
            if Set(list).count > 1 { return (key, "has differing entries \(list); diffusers' AutoencoderTiny only runs equal ones") }
        }
        return nil
    }
}
