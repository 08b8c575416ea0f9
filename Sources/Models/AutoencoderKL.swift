import Foundation
import Tensors
import Weights

/// Stable Diffusion's VAE, diffusers' `AutoencoderKL`: an encoder from images to the latent
/// distribution and a decoder back, with a single-head attention in each mid-block.
///
/// Latents here are the VAE's own; the pipelines multiply by `scalingFactor` after encoding and
/// divide before decoding.
public struct AutoencoderKL: Sendable {
    public let config: AutoencoderKLConfig
    /// `scaling_factor` from the config (0.18215 for SD 1.x/2.x).
    public var scalingFactor: Float { Float(config.scalingFactor) }

    let encoder: VAEEncoder?
    let decoder: VAEDecoder
    let quantConv: Conv2D?
    let postQuantConv: Conv2D?

    /// Loads the decoder, and the encoder when its weights are present (decoder-only files
    /// exist; `encode` then throws).
    public init(config: AutoencoderKLConfig, weights: WeightSet) throws {
        self.config = config
        for t in config.downBlockTypes where t != "DownEncoderBlock2D" {
            throw ModelError.unsupported(component: "vae", "block type \(t)")
        }
        for t in config.upBlockTypes where t != "UpDecoderBlock2D" {
            throw ModelError.unsupported(component: "vae", "block type \(t)")
        }
        let p = Parameters(weights, float32Convolutions: true)
        let latent = config.latentChannels
        decoder = try VAEDecoder(p.scope("decoder"), config: config)
        postQuantConv = config.usePostQuantConv
            ? try Conv2D(p.scope("post_quant_conv"), in: latent, out: latent, kernel: 1) : nil
        if weights.contains("encoder.conv_in.weight") {
            encoder = try VAEEncoder(p.scope("encoder"), config: config)
            quantConv = config.useQuantConv
                ? try Conv2D(p.scope("quant_conv"), in: 2 * latent, out: 2 * latent, kernel: 1) : nil
        } else {
            encoder = nil
            quantConv = nil
        }
    }

    /// Decodes VAE latents [B, latent, h, w] (already divided by the scaling factor) to images
    /// [B, 3, 8h, 8w] in about [-1, 1].
    public func decode(_ latents: Tensor) -> Tensor {
        decoder(postQuantConv.map { $0(latents) } ?? latents)
    }

    /// The latent distribution of images [B, 3, H, W] in [-1, 1]: mean and standard deviation,
    /// each [B, latent, H/8, W/8]. img2img uses the mean.
    public func encode(_ images: Tensor) throws -> (mean: Tensor, std: Tensor) {
        guard let encoder else { throw ModelError.invalidInput(Self.noEncoderMessage) }
        let h = encoder(images)
        return distribution(quantConv.map { $0(h) } ?? h)
    }

    static let noEncoderMessage = "vae: these weights have no encoder (encoder.* tensors are missing)"

    /// Mean and standard deviation from the encoder's moments [B, 2·latent, h, w].
    func distribution(_ moments: Tensor) -> (mean: Tensor, std: Tensor) {
        let latent = config.latentChannels
        let mean = moments.channels(0..<latent)
        var std = moments.channels(latent..<(2 * latent))
        std.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count { p[i] = expf(0.5 * min(20, max(-30, p[i]))) }
        }
        return (mean, std)
    }
}

/// The mid-block shared by encoder and decoder: resnet, single-head attention, resnet.
struct VAEMidBlock: Sendable {
    let first: ResnetBlock2D, second: ResnetBlock2D
    let norm: GroupNorm?, attention: Attention?

    init(_ p: Parameters, channels: Int, groups: Int, withAttention: Bool) throws {
        first = try ResnetBlock2D(p.scope("resnets.0"), in: channels, out: channels, timeChannels: nil,
                                  groups: groups, eps: 1e-6)
        second = try ResnetBlock2D(p.scope("resnets.1"), in: channels, out: channels, timeChannels: nil,
                                   groups: groups, eps: 1e-6)
        if withAttention {
            let ap = p.scope("attentions.0")
            norm = try GroupNorm(ap.scope("group_norm"), groups: groups, channels: channels, eps: 1e-6)
            attention = try Attention(ap, queryDim: channels, heads: 1, headDim: channels, projectionBias: true)
        } else {
            norm = nil
            attention = nil
        }
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = first(x)
        if let norm, let attention {
            let (height, width) = (h.shape[2], h.shape[3])
            h = attention(norm(h).nchwToTokens()).tokensToNCHW(height: height, width: width) + h
        }
        return second(h)
    }
}

struct VAEEncoder: Sendable {
    let convIn: Conv2D
    let blocks: [(resnets: [ResnetBlock2D], downsampler: Downsample2D?)]
    let mid: VAEMidBlock
    let normOut: GroupNorm
    let convOut: Conv2D

    init(_ p: Parameters, config c: AutoencoderKLConfig) throws {
        let channels = c.blockOutChannels, groups = c.normNumGroups
        convIn = try Conv2D(p.scope("conv_in"), in: c.inChannels, out: channels[0], kernel: 3)
        var blocks: [(resnets: [ResnetBlock2D], downsampler: Downsample2D?)] = []
        var output = channels[0]
        for i in channels.indices {
            let input = output
            output = channels[i]
            let bp = p.scope("down_blocks", i)
            let resnets = try (0..<c.layersPerBlock).map {
                try ResnetBlock2D(bp.scope("resnets", $0), in: $0 == 0 ? input : output, out: output,
                                  timeChannels: nil, groups: groups, eps: 1e-6)
            }
            let down = i == channels.count - 1 ? nil
                : try Downsample2D(bp.scope("downsamplers.0"), channels: output, padding: 0)
            blocks.append((resnets, down))
        }
        self.blocks = blocks
        let top = channels[channels.count - 1]
        mid = try VAEMidBlock(p.scope("mid_block"), channels: top, groups: groups,
                              withAttention: c.midBlockAddAttention)
        normOut = try GroupNorm(p.scope("conv_norm_out"), groups: groups, channels: top, eps: 1e-6)
        convOut = try Conv2D(p.scope("conv_out"), in: top, out: 2 * c.latentChannels, kernel: 3)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = convIn(x)
        for block in blocks {
            for resnet in block.resnets { h = resnet(h) }
            if let down = block.downsampler { h = down(h) }
        }
        return convOut(normOut(mid(h), activation: .silu))
    }
}

struct VAEDecoder: Sendable {
    let convIn: Conv2D
    let mid: VAEMidBlock
    let blocks: [(resnets: [ResnetBlock2D], upsampler: Upsample2D?)]
    let normOut: GroupNorm
    let convOut: Conv2D

    init(_ p: Parameters, config c: AutoencoderKLConfig) throws {
        let reversed = Array(c.blockOutChannels.reversed()), groups = c.normNumGroups
        convIn = try Conv2D(p.scope("conv_in"), in: c.latentChannels, out: reversed[0], kernel: 3)
        mid = try VAEMidBlock(p.scope("mid_block"), channels: reversed[0], groups: groups,
                              withAttention: c.midBlockAddAttention)
        var blocks: [(resnets: [ResnetBlock2D], upsampler: Upsample2D?)] = []
        var output = reversed[0]
        for i in reversed.indices {
            let previous = output
            output = reversed[i]
            let bp = p.scope("up_blocks", i)
            let resnets = try (0...c.layersPerBlock).map {
                try ResnetBlock2D(bp.scope("resnets", $0), in: $0 == 0 ? previous : output, out: output,
                                  timeChannels: nil, groups: groups, eps: 1e-6)
            }
            let up = i == reversed.count - 1 ? nil : try Upsample2D(bp.scope("upsamplers.0"), channels: output)
            blocks.append((resnets, up))
        }
        self.blocks = blocks
        normOut = try GroupNorm(p.scope("conv_norm_out"), groups: groups, channels: output, eps: 1e-6)
        convOut = try Conv2D(p.scope("conv_out"), in: output, out: c.outChannels, kernel: 3)
    }

    func callAsFunction(_ z: Tensor) -> Tensor {
        var h = mid(convIn(z))
        for block in blocks {
            for resnet in block.resnets { h = resnet(h) }
            if let up = block.upsampler { h = up(h) }
        }
        return convOut(normOut(h, activation: .silu))
    }
}
