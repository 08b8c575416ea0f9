import Foundation
import Tensors
import Weights

/// Stable Diffusion's denoiser, diffusers' `UNet2DConditionModel`, built from its config:
/// CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D.
public struct UNet2DConditionModel: Sendable {
    public let config: UNetConfig

    private let timeChannels: Int
    private let timeLinear1: Linear, timeLinear2: Linear
    /// `time_embedding.cond_proj` of guidance-embedded (LCM-distilled) UNets.
    private let condProjection: Linear?
    private let convIn: Conv2D
    private let downBlocks: [DownBlock]
    private let mid: MidBlock
    private let upBlocks: [UpBlock]
    private let normOut: GroupNorm
    private let convOut: Conv2D

    /// Builds the network from `config` with weights from `weights`; every tensor's shape is
    /// checked against the config.
    public init(config: UNetConfig, weights: WeightSet) throws {
        try Self.validate(config)
        self.config = config
        let p = Parameters(weights)
        let channels = config.blockOutChannels
        let levels = channels.count
        let groups = config.normNumGroups ?? 32
        let eps = Float(config.normEps)
        let heads = config.headsPerBlock
        let layers = config.layersPerDownBlock
        let transformerLayers = config.transformerLayersPerDownBlock
        let contextDim = config.crossAttentionDim.first ?? 768
        timeChannels = channels[0] * 4

        timeLinear1 = try Linear(p.scope("time_embedding.linear_1"), in: channels[0], out: timeChannels)
        timeLinear2 = try Linear(p.scope("time_embedding.linear_2"), in: timeChannels, out: timeChannels)
        condProjection = try config.timeCondProjDim.map {
            try Linear(p.scope("time_embedding.cond_proj"), in: $0, out: channels[0], bias: false)
        }
        convIn = try Conv2D(p.scope("conv_in"), in: config.inChannels, out: channels[0],
                            kernel: config.convInKernel)

        var down: [DownBlock] = []
        var output = channels[0]
        for (i, type) in config.downBlockTypes.enumerated() {
            let input = output
            output = channels[i]
            let bp = p.scope("down_blocks", i)
            let cross = type == "CrossAttnDownBlock2D"
            var resnets: [ResnetBlock2D] = []
            var attentions: [Transformer2D] = []
            for j in 0..<layers[i] {
                resnets.append(try ResnetBlock2D(bp.scope("resnets", j), in: j == 0 ? input : output,
                                                 out: output, timeChannels: timeChannels, groups: groups,
                                                 eps: eps))
                if cross {
                    attentions.append(try Transformer2D(bp.scope("attentions", j), channels: output,
                                                        heads: heads[i], contextDim: contextDim,
                                                        layers: transformerLayers[i], groups: groups))
                }
            }
            let downsampler = i == levels - 1 ? nil
                : try Downsample2D(bp.scope("downsamplers.0"), channels: output,
                                   padding: config.downsamplePadding)
            down.append(DownBlock(resnets: resnets, attentions: attentions, downsampler: downsampler))
        }
        downBlocks = down

        let mp = p.scope("mid_block")
        let top = channels[levels - 1]
        let midScale = Float(config.midBlockScaleFactor)
        mid = MidBlock(
            first: try ResnetBlock2D(mp.scope("resnets.0"), in: top, out: top, timeChannels: timeChannels,
                                     groups: groups, eps: eps, outputScale: midScale),
            attention: try Transformer2D(mp.scope("attentions.0"), channels: top, heads: heads[levels - 1],
                                         contextDim: contextDim, layers: transformerLayers[levels - 1],
                                         groups: groups),
            second: try ResnetBlock2D(mp.scope("resnets.1"), in: top, out: top, timeChannels: timeChannels,
                                      groups: groups, eps: eps, outputScale: midScale))

        var up: [UpBlock] = []
        let reversedChannels = Array(channels.reversed())
        let reversedHeads = Array(heads.reversed())
        let reversedLayers = Array(layers.reversed())
        let reversedTransformerLayers = Array(transformerLayers.reversed())
        output = reversedChannels[0]
        for (i, type) in config.upBlockTypes.enumerated() {
            let previous = output
            output = reversedChannels[i]
            let input = reversedChannels[min(i + 1, levels - 1)]
            let bp = p.scope("up_blocks", i)
            let cross = type == "CrossAttnUpBlock2D"
            let count = reversedLayers[i] + 1
            var resnets: [ResnetBlock2D] = []
            var attentions: [Transformer2D] = []
            for j in 0..<count {
                let skip = j == count - 1 ? input : output
                let resIn = j == 0 ? previous : output
                resnets.append(try ResnetBlock2D(bp.scope("resnets", j), in: resIn + skip, out: output,
                                                 timeChannels: timeChannels, groups: groups, eps: eps))
                if cross {
                    attentions.append(try Transformer2D(bp.scope("attentions", j), channels: output,
                                                        heads: reversedHeads[i], contextDim: contextDim,
                                                        layers: reversedTransformerLayers[i], groups: groups))
                }
            }
            let upsampler = i == levels - 1 ? nil : try Upsample2D(bp.scope("upsamplers.0"), channels: output)
            up.append(UpBlock(resnets: resnets, attentions: attentions, upsampler: upsampler))
        }
        upBlocks = up

        normOut = try GroupNorm(p.scope("conv_norm_out"), groups: groups, channels: channels[0], eps: eps)
        convOut = try Conv2D(p.scope("conv_out"), in: channels[0], out: config.outChannels,
                             kernel: config.convOutKernel)
    }

    /// Whether the UNet takes the guidance scale as an embedding (`time_cond_proj_dim`, as
    /// LCM-distilled models do) instead of a classifier-free guidance pair.
    public var embedsGuidance: Bool { condProjection != nil }

    /// Predicts the noise (or v, or x₀, per the scheduler's prediction type) for `sample`
    /// [B, C, H, W] at `timestep`, conditioned on `encoderHiddenStates` [B, tokens, crossDim].
    /// `timestepCondition` [B, time_cond_proj_dim] is the guidance embedding of a guidance-embedded
    /// UNet (`guidanceScaleEmbedding`); other UNets take none, and diffusers skips it when absent.
    public func callAsFunction(_ sample: Tensor, timestep: Float, encoderHiddenStates: Tensor,
                               timestepCondition: Tensor? = nil) -> Tensor {
        let batch = sample.shape[0]
        precondition(encoderHiddenStates.shape[0] == batch,
                     "UNet: \(batch) samples but \(encoderHiddenStates.shape[0]) conditioning sequences")
        precondition(timestepCondition == nil || (condProjection != nil && timestepCondition!.shape == [batch, config.timeCondProjDim!]),
                     "UNet: a timestep condition needs time_cond_proj_dim and shape [batch, dim]")
        let embedding = timeEmbedding(timestep, batch: batch, condition: timestepCondition)

        var h = convIn(config.centerInputSample ? sample * 2 - 1 : sample)
        var skips = [h]
        for block in downBlocks {
            for (j, resnet) in block.resnets.enumerated() {
                h = resnet(h, timeEmbedding: embedding)
                if !block.attentions.isEmpty { h = block.attentions[j](h, context: encoderHiddenStates) }
                skips.append(h)
            }
            if let downsampler = block.downsampler {
                h = downsampler(h)
                skips.append(h)
            }
        }

        h = mid.first(h, timeEmbedding: embedding)
        h = mid.attention(h, context: encoderHiddenStates)
        h = mid.second(h, timeEmbedding: embedding)

        for block in upBlocks {
            for (j, resnet) in block.resnets.enumerated() {
                h = resnet(Tensor.concatenate([h, skips.removeLast()]), timeEmbedding: embedding)
                if !block.attentions.isEmpty { h = block.attentions[j](h, context: encoderHiddenStates) }
            }
            if let upsampler = block.upsampler {
                // Resize to the next skip connection, which is what makes odd latent sizes work.
                let next = skips.last!
                h = upsampler(h, size: (next.shape[2], next.shape[3]))
            }
        }
        return convOut(normOut(h, activation: .silu))
    }

    /// Sinusoidal embedding of the timestep through the two-layer MLP, with the SiLU every
    /// resnet applies before its projection already applied. A condition (per sample) is projected
    /// and added to the sinusoid before the MLP, as diffusers' `TimestepEmbedding` does.
    private func timeEmbedding(_ timestep: Float, batch: Int, condition: Tensor?) -> Tensor {
        let dim = config.blockOutChannels[0]
        let sinusoid = timestepEmbedding(timestep, dimension: dim, flipSinToCos: config.flipSinToCos,
                                         downscaleFrequencyShift: Float(config.freqShift))
        let rows = condition == nil ? 1 : batch
        var input = Tensor(shape: [rows, dim], data: Array([[Float]](repeating: sinusoid, count: rows).joined()))
        if let condition, let condProjection { input = input + condProjection(condition) }
        let e = activate(timeLinear2(activate(timeLinear1(input), .silu)), .silu)
        guard rows == 1 else { return e }
        return Tensor(shape: [batch, timeChannels], data: Array([[Float]](repeating: e.data, count: batch).joined()))
    }

    private static func validate(_ c: UNetConfig) throws {
        func unsupported(_ what: String) -> ModelError { .unsupported(component: "unet", what) }
        let known: Set<String> = ["CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
        for t in c.downBlockTypes + c.upBlockTypes where !known.contains(t) {
            throw unsupported("block type \(t)")
        }
        guard c.midBlockType == nil || c.midBlockType == "UNetMidBlock2DCrossAttn" else {
            throw unsupported("mid block \(c.midBlockType!)")
        }
        guard c.downBlockTypes.count == c.blockOutChannels.count,
              c.upBlockTypes.count == c.blockOutChannels.count else {
            throw ModelError.invalidConfig(component: "unet",
                "down_block_types, up_block_types and block_out_channels must have the same length")
        }
        let blocks = c.blockOutChannels.count
        for (name, list) in [("attention heads", c.headsPerBlock), ("layers_per_block", c.layersPerDownBlock),
                             ("transformer_layers_per_block", c.transformerLayersPerDownBlock)]
        where list.count != blocks {
            throw ModelError.invalidConfig(component: "unet", "\(name) has \(list.count) entries for \(blocks) blocks")
        }
        if case .many(let dims) = c.crossAttentionDim, Set(dims).count > 1 {
            throw unsupported("a different cross_attention_dim per block")
        }
        if c.normNumGroups == nil { throw unsupported("norm_num_groups null") }
        if c.encoderHidDim != nil { throw unsupported("encoder_hid_dim") }
        if c.additionEmbedType != nil { throw unsupported("addition_embed_type (SDXL-style conditioning)") }
        if c.classEmbedType != nil { throw unsupported("class_embed_type") }
        if c.resnetTimeScaleShift != "default" { throw unsupported("resnet_time_scale_shift \(c.resnetTimeScaleShift)") }
        if c.timeEmbeddingType != "positional" { throw unsupported("time_embedding_type \(c.timeEmbeddingType)") }
        if c.actFn != "silu" { throw unsupported("act_fn \(c.actFn)") }
        if c.dualCrossAttention || c.onlyCrossAttention.expanded(to: c.downBlockTypes.count).contains(true) { throw unsupported("dual or cross-only attention") }
    }
}

private struct DownBlock: Sendable {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2D]
    let downsampler: Downsample2D?
}

private struct MidBlock: Sendable {
    let first: ResnetBlock2D
    let attention: Transformer2D
    let second: ResnetBlock2D
}

private struct UpBlock: Sendable {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2D]
    let upsampler: Upsample2D?
}

/// diffusers' `get_timestep_embedding` for one timestep, in float32 as diffusers computes it:
/// frequencies exp(−ln(10000)·i / (half − shift)), then [sin, cos] (or [cos, sin] when flipped).
public func timestepEmbedding(_ t: Float, dimension: Int, flipSinToCos: Bool,
                              downscaleFrequencyShift: Float, maxPeriod: Float = 10000) -> [Float] {
    let half = dimension / 2
    var sines = [Float](repeating: 0, count: half), cosines = sines
    let logPeriod = -Float(log(Double(maxPeriod)))
    for i in 0..<half {
        let exponent = logPeriod * Float(i) / (Float(half) - downscaleFrequencyShift)
        let arg = t * expf(exponent)
        sines[i] = sinf(arg)
        cosines[i] = cosf(arg)
    }
    var out = flipSinToCos ? cosines + sines : sines + cosines
    if dimension % 2 == 1 { out.append(0) }
    return out
}

/// diffusers' `get_guidance_scale_embedding` for one value, in float32 as diffusers computes it:
/// w·1000 times the frequencies exp(−i·ln(10000) / (half − 1)), then [sin, cos]. LCM pipelines
/// pass w = guidance scale − 1.
public func guidanceScaleEmbedding(_ w: Float, dimension: Int) -> [Float] {
    let half = dimension / 2
    let scaled = w * 1000
    let step = Float(log(10000.0)) / Float(half - 1)
    var out = [Float](repeating: 0, count: dimension)
    for i in 0..<half {
        let arg = scaled * expf(Float(i) * -step)
        out[i] = sinf(arg)
        out[half + i] = cosf(arg)
    }
    return out
}
