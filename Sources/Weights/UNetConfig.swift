import Foundation

/// diffusers' `UNet2DConditionModel` configuration (`unet/config.json`). Defaults are those of the
/// constructor in diffusers 0.42 (`models/unets/unet_2d_condition.py`), which differ from SD 1.5's
/// file in places (e.g. `cross_attention_dim` defaults to 1280, SD 1.5 sets 768).
public struct UNetConfig: JSONConfiguration, Equatable {
    public var className: String?
    /// Latent size the model was trained at, an integer or [height, width]; nil if unspecified.
    public var sampleSize: OneOrMany<Int>?
    public var inChannels: Int
    public var outChannels: Int
    public var centerInputSample: Bool
    public var flipSinToCos: Bool
    public var freqShift: Int
    public var downBlockTypes: [String]
    /// nil when the file says `null` (no mid block).
    public var midBlockType: String?
    public var upBlockTypes: [String]
    public var onlyCrossAttention: OneOrMany<Bool>
    public var blockOutChannels: [Int]
    public var layersPerBlock: OneOrMany<Int>
    public var downsamplePadding: Int
    public var midBlockScaleFactor: Double
    public var dropout: Double
    public var actFn: String
    /// nil when the file says `null` (diffusers then skips the output GroupNorm).
    public var normNumGroups: Int?
    public var normEps: Double
    public var crossAttentionDim: OneOrMany<Int>
    public var transformerLayersPerBlock: OneOrMany<Int>
    public var encoderHidDim: Int?
    public var encoderHidDimType: String?
    /// Despite the name, the number of heads when `numAttentionHeads` is nil (see `headsPerBlock`).
    public var attentionHeadDim: OneOrMany<Int>
    public var numAttentionHeads: OneOrMany<Int>?
    public var dualCrossAttention: Bool
    public var useLinearProjection: Bool
    public var classEmbedType: String?
    public var additionEmbedType: String?
    public var additionTimeEmbedDim: Int?
    public var numClassEmbeds: Int?
    public var upcastAttention: Bool
    public var resnetTimeScaleShift: String
    public var resnetSkipTimeAct: Bool
    public var resnetOutScaleFactor: Double
    public var timeEmbeddingType: String
    public var timeEmbeddingDim: Int?
    public var timeEmbeddingActFn: String?
    public var timestepPostAct: String?
    public var timeCondProjDim: Int?
    public var convInKernel: Int
    public var convOutKernel: Int
    public var projectionClassEmbeddingsInputDim: Int?
    public var attentionType: String
    public var classEmbeddingsConcat: Bool
    public var midBlockOnlyCrossAttention: Bool?
    public var crossAttentionNorm: String?
    public var additionEmbedTypeNumHeads: Int

    public init(
        className: String? = "UNet2DConditionModel",
        sampleSize: OneOrMany<Int>? = nil,
        inChannels: Int = 4,
        outChannels: Int = 4,
        centerInputSample: Bool = false,
        flipSinToCos: Bool = true,
        freqShift: Int = 0,
        downBlockTypes: [String] = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        midBlockType: String? = "UNetMidBlock2DCrossAttn",
        upBlockTypes: [String] = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        onlyCrossAttention: OneOrMany<Bool> = false,
        blockOutChannels: [Int] = [320, 640, 1280, 1280],
        layersPerBlock: OneOrMany<Int> = 2,
        downsamplePadding: Int = 1,
        midBlockScaleFactor: Double = 1,
        dropout: Double = 0,
        actFn: String = "silu",
        normNumGroups: Int? = 32,
        normEps: Double = 1e-5,
        crossAttentionDim: OneOrMany<Int> = 1280,
        transformerLayersPerBlock: OneOrMany<Int> = 1,
        encoderHidDim: Int? = nil,
        encoderHidDimType: String? = nil,
        attentionHeadDim: OneOrMany<Int> = 8,
        numAttentionHeads: OneOrMany<Int>? = nil,
        dualCrossAttention: Bool = false,
        useLinearProjection: Bool = false,
        classEmbedType: String? = nil,
        additionEmbedType: String? = nil,
        additionTimeEmbedDim: Int? = nil,
        numClassEmbeds: Int? = nil,
        upcastAttention: Bool = false,
        resnetTimeScaleShift: String = "default",
        resnetSkipTimeAct: Bool = false,
        resnetOutScaleFactor: Double = 1,
        timeEmbeddingType: String = "positional",
        timeEmbeddingDim: Int? = nil,
        timeEmbeddingActFn: String? = nil,
        timestepPostAct: String? = nil,
        timeCondProjDim: Int? = nil,
        convInKernel: Int = 3,
        convOutKernel: Int = 3,
        projectionClassEmbeddingsInputDim: Int? = nil,
        attentionType: String = "default",
        classEmbeddingsConcat: Bool = false,
        midBlockOnlyCrossAttention: Bool? = nil,
        crossAttentionNorm: String? = nil,
        additionEmbedTypeNumHeads: Int = 64
    ) {
        self.className = className
        self.sampleSize = sampleSize
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.centerInputSample = centerInputSample
        self.flipSinToCos = flipSinToCos
        self.freqShift = freqShift
        self.downBlockTypes = downBlockTypes
        self.midBlockType = midBlockType
        self.upBlockTypes = upBlockTypes
        self.onlyCrossAttention = onlyCrossAttention
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.downsamplePadding = downsamplePadding
        self.midBlockScaleFactor = midBlockScaleFactor
        self.dropout = dropout
        self.actFn = actFn
        self.normNumGroups = normNumGroups
        self.normEps = normEps
        self.crossAttentionDim = crossAttentionDim
        self.transformerLayersPerBlock = transformerLayersPerBlock
        self.encoderHidDim = encoderHidDim
        self.encoderHidDimType = encoderHidDimType
        self.attentionHeadDim = attentionHeadDim
        self.numAttentionHeads = numAttentionHeads
        self.dualCrossAttention = dualCrossAttention
        self.useLinearProjection = useLinearProjection
        self.classEmbedType = classEmbedType
        self.additionEmbedType = additionEmbedType
        self.additionTimeEmbedDim = additionTimeEmbedDim
        self.numClassEmbeds = numClassEmbeds
        self.upcastAttention = upcastAttention
        self.resnetTimeScaleShift = resnetTimeScaleShift
        self.resnetSkipTimeAct = resnetSkipTimeAct
        self.resnetOutScaleFactor = resnetOutScaleFactor
        self.timeEmbeddingType = timeEmbeddingType
        self.timeEmbeddingDim = timeEmbeddingDim
        self.timeEmbeddingActFn = timeEmbeddingActFn
        self.timestepPostAct = timestepPostAct
        self.timeCondProjDim = timeCondProjDim
        self.convInKernel = convInKernel
        self.convOutKernel = convOutKernel
        self.projectionClassEmbeddingsInputDim = projectionClassEmbeddingsInputDim
        self.attentionType = attentionType
        self.classEmbeddingsConcat = classEmbeddingsConcat
        self.midBlockOnlyCrossAttention = midBlockOnlyCrossAttention
        self.crossAttentionNorm = crossAttentionNorm
        self.additionEmbedTypeNumHeads = additionEmbedTypeNumHeads
    }

    enum CodingKeys: String, CodingKey {
        case className = "_class_name"
        case sampleSize = "sample_size"
        case inChannels = "in_channels"
        case outChannels = "out_channels"
        case centerInputSample = "center_input_sample"
        case flipSinToCos = "flip_sin_to_cos"
        case freqShift = "freq_shift"
        case downBlockTypes = "down_block_types"
        case midBlockType = "mid_block_type"
        case upBlockTypes = "up_block_types"
        case onlyCrossAttention = "only_cross_attention"
        case blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block"
        case downsamplePadding = "downsample_padding"
        case midBlockScaleFactor = "mid_block_scale_factor"
        case dropout
        case actFn = "act_fn"
        case normNumGroups = "norm_num_groups"
        case normEps = "norm_eps"
        case crossAttentionDim = "cross_attention_dim"
        case transformerLayersPerBlock = "transformer_layers_per_block"
        case encoderHidDim = "encoder_hid_dim"
        case encoderHidDimType = "encoder_hid_dim_type"
        case attentionHeadDim = "attention_head_dim"
        case numAttentionHeads = "num_attention_heads"
        case dualCrossAttention = "dual_cross_attention"
        case useLinearProjection = "use_linear_projection"
        case classEmbedType = "class_embed_type"
        case additionEmbedType = "addition_embed_type"
        case additionTimeEmbedDim = "addition_time_embed_dim"
        case numClassEmbeds = "num_class_embeds"
        case upcastAttention = "upcast_attention"
        case resnetTimeScaleShift = "resnet_time_scale_shift"
        case resnetSkipTimeAct = "resnet_skip_time_act"
        case resnetOutScaleFactor = "resnet_out_scale_factor"
        case timeEmbeddingType = "time_embedding_type"
        case timeEmbeddingDim = "time_embedding_dim"
        case timeEmbeddingActFn = "time_embedding_act_fn"
        case timestepPostAct = "timestep_post_act"
        case timeCondProjDim = "time_cond_proj_dim"
        case convInKernel = "conv_in_kernel"
        case convOutKernel = "conv_out_kernel"
        case projectionClassEmbeddingsInputDim = "projection_class_embeddings_input_dim"
        case attentionType = "attention_type"
        case classEmbeddingsConcat = "class_embeddings_concat"
        case midBlockOnlyCrossAttention = "mid_block_only_cross_attention"
        case crossAttentionNorm = "cross_attention_norm"
        case additionEmbedTypeNumHeads = "addition_embed_type_num_heads"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = UNetConfig()
        className = try c.decodeIfPresent(String.self, forKey: .className)
        sampleSize = try c.nullable(.sampleSize, or: d.sampleSize)
        inChannels = try c.value(.inChannels, or: d.inChannels)
        outChannels = try c.value(.outChannels, or: d.outChannels)
        centerInputSample = try c.value(.centerInputSample, or: d.centerInputSample)
        flipSinToCos = try c.value(.flipSinToCos, or: d.flipSinToCos)
        freqShift = try c.value(.freqShift, or: d.freqShift)
        downBlockTypes = try c.value(.downBlockTypes, or: d.downBlockTypes)
        midBlockType = try c.nullable(.midBlockType, or: d.midBlockType)
        upBlockTypes = try c.value(.upBlockTypes, or: d.upBlockTypes)
        onlyCrossAttention = try c.value(.onlyCrossAttention, or: d.onlyCrossAttention)
        blockOutChannels = try c.value(.blockOutChannels, or: d.blockOutChannels)
        layersPerBlock = try c.value(.layersPerBlock, or: d.layersPerBlock)
        downsamplePadding = try c.value(.downsamplePadding, or: d.downsamplePadding)
        midBlockScaleFactor = try c.value(.midBlockScaleFactor, or: d.midBlockScaleFactor)
        dropout = try c.value(.dropout, or: d.dropout)
        actFn = try c.value(.actFn, or: d.actFn)
        normNumGroups = try c.nullable(.normNumGroups, or: d.normNumGroups)
        normEps = try c.value(.normEps, or: d.normEps)
        crossAttentionDim = try c.value(.crossAttentionDim, or: d.crossAttentionDim)
        do {
            transformerLayersPerBlock = try c.value(.transformerLayersPerBlock, or: d.transformerLayersPerBlock)
        } catch {
            // Per-layer depths ([[1, 2], [3]]) exist only in asymmetric SDXL-style UNets.
            if (try? c.decode([[Int]].self, forKey: .transformerLayersPerBlock)) != nil {
                throw DecodingError.dataCorruptedError(
                    forKey: .transformerLayersPerBlock, in: c,
                    debugDescription: "nested per-layer lists (asymmetric SDXL-style UNets) are not supported")
            }
            throw error
        }
        encoderHidDim = try c.nullable(.encoderHidDim, or: d.encoderHidDim)
        encoderHidDimType = try c.nullable(.encoderHidDimType, or: d.encoderHidDimType)
        attentionHeadDim = try c.value(.attentionHeadDim, or: d.attentionHeadDim)
        numAttentionHeads = try c.nullable(.numAttentionHeads, or: d.numAttentionHeads)
        dualCrossAttention = try c.value(.dualCrossAttention, or: d.dualCrossAttention)
        useLinearProjection = try c.value(.useLinearProjection, or: d.useLinearProjection)
        classEmbedType = try c.nullable(.classEmbedType, or: d.classEmbedType)
        additionEmbedType = try c.nullable(.additionEmbedType, or: d.additionEmbedType)
        additionTimeEmbedDim = try c.nullable(.additionTimeEmbedDim, or: d.additionTimeEmbedDim)
        numClassEmbeds = try c.nullable(.numClassEmbeds, or: d.numClassEmbeds)
        upcastAttention = try c.value(.upcastAttention, or: d.upcastAttention)
        resnetTimeScaleShift = try c.value(.resnetTimeScaleShift, or: d.resnetTimeScaleShift)
        resnetSkipTimeAct = try c.value(.resnetSkipTimeAct, or: d.resnetSkipTimeAct)
        resnetOutScaleFactor = try c.value(.resnetOutScaleFactor, or: d.resnetOutScaleFactor)
        timeEmbeddingType = try c.value(.timeEmbeddingType, or: d.timeEmbeddingType)
        timeEmbeddingDim = try c.nullable(.timeEmbeddingDim, or: d.timeEmbeddingDim)
        timeEmbeddingActFn = try c.nullable(.timeEmbeddingActFn, or: d.timeEmbeddingActFn)
        timestepPostAct = try c.nullable(.timestepPostAct, or: d.timestepPostAct)
        timeCondProjDim = try c.nullable(.timeCondProjDim, or: d.timeCondProjDim)
        convInKernel = try c.value(.convInKernel, or: d.convInKernel)
        convOutKernel = try c.value(.convOutKernel, or: d.convOutKernel)
        projectionClassEmbeddingsInputDim = try c.nullable(.projectionClassEmbeddingsInputDim,
                                                           or: d.projectionClassEmbeddingsInputDim)
        attentionType = try c.value(.attentionType, or: d.attentionType)
        classEmbeddingsConcat = try c.value(.classEmbeddingsConcat, or: d.classEmbeddingsConcat)
        midBlockOnlyCrossAttention = try c.nullable(.midBlockOnlyCrossAttention, or: d.midBlockOnlyCrossAttention)
        crossAttentionNorm = try c.nullable(.crossAttentionNorm, or: d.crossAttentionNorm)
        additionEmbedTypeNumHeads = try c.value(.additionEmbedTypeNumHeads, or: d.additionEmbedTypeNumHeads)
    }

    // MARK: - Values per down block, resolved as diffusers does

    /// Attention heads of each down block (the up blocks use them reversed, the mid block the last).
    /// diffusers' rule: `num_attention_heads` if given, else `attention_head_dim`, an integer being
    /// repeated for every block. That value is the number of heads, not the head size, so SD 1.5's
    /// `attention_head_dim: 8` means 8 heads of 40/80/160 channels.
    public var headsPerBlock: [Int] {
        (numAttentionHeads ?? attentionHeadDim).expanded(to: downBlockTypes.count)
    }

    /// ResNet layers in each down block (up blocks have one more).
    public var layersPerDownBlock: [Int] { layersPerBlock.expanded(to: downBlockTypes.count) }

    /// Transformer blocks inside each down block's attention (the mid block uses the last).
    public var transformerLayersPerDownBlock: [Int] { transformerLayersPerBlock.expanded(to: downBlockTypes.count) }

    /// Cross-attention context width of each down block.
    public var crossAttentionDimPerBlock: [Int] { crossAttentionDim.expanded(to: downBlockTypes.count) }

    /// Whether each down block's attention is cross-attention only.
    public var onlyCrossAttentionPerBlock: [Bool] { onlyCrossAttention.expanded(to: downBlockTypes.count) }

    /// diffusers' rule for the mid block: the explicit value, else a single-bool
    /// `only_cross_attention`, else false.
    public var resolvedMidBlockOnlyCrossAttention: Bool {
        if let midBlockOnlyCrossAttention { return midBlockOnlyCrossAttention }
        if case let .one(value) = onlyCrossAttention { return value }
        return false
    }

    /// `sample_size` as (height, width) in latent pixels, nil if unspecified.
    public var latentSampleSize: (height: Int, width: Int)? {
        switch sampleSize {
        case nil: return nil
        case let .one(s)?: return (s, s)
        case let .many(list)?: return list.count == 2 ? (list[0], list[1]) : list.first.map { ($0, $0) }
        }
    }
}

extension UNetConfig: ConsistencyChecked {
    func inconsistency() -> (key: String, problem: String)? {
        let blocks = downBlockTypes.count
        let channels = 1...(1 << 16), layers = 0...64
        if let problem = sizeProblem([
            ("down_block_types", [blocks], 1...16),
            ("in_channels", [inChannels], 1...1024), ("out_channels", [outChannels], 1...1024),
            ("block_out_channels", blockOutChannels, channels),
            ("layers_per_block", layersPerBlock.all, layers),
            ("transformer_layers_per_block", transformerLayersPerBlock.all, layers),
            ("attention_head_dim", attentionHeadDim.all, 1...(1 << 16)),
            ("num_attention_heads", numAttentionHeads?.all ?? [], 1...4096),
            ("cross_attention_dim", crossAttentionDim.all, channels),
            ("norm_num_groups", normNumGroups.map { [$0] } ?? [], 1...4096),
            ("conv_in_kernel", [convInKernel], 1...15), ("conv_out_kernel", [convOutKernel], 1...15),
            ("freq_shift", [freqShift], -(1 << 16)...(1 << 16)),
            ("downsample_padding", [downsamplePadding], 0...16),
            ("sample_size", sampleSize?.all ?? [], 1...(1 << 16)),
            ("time_embedding_dim", timeEmbeddingDim.map { [$0] } ?? [], channels),
            ("time_cond_proj_dim", timeCondProjDim.map { [$0] } ?? [], channels),
            ("addition_time_embed_dim", additionTimeEmbedDim.map { [$0] } ?? [], channels),
            ("num_class_embeds", numClassEmbeds.map { [$0] } ?? [], 1...(1 << 20)),
            ("projection_class_embeddings_input_dim", projectionClassEmbeddingsInputDim.map { [$0] } ?? [], channels),
            ("encoder_hid_dim", encoderHidDim.map { [$0] } ?? [], channels),
            ("addition_embed_type_num_heads", [additionEmbedTypeNumHeads], 1...4096),
        ]) {
            return problem
        }
        for (key, value) in [("norm_eps", normEps), ("mid_block_scale_factor", midBlockScaleFactor),
                             ("resnet_out_scale_factor", resnetOutScaleFactor), ("dropout", dropout)]
            where !value.isFinite {
            return (key, "is \(value); it must be a finite number")
        }
        if upBlockTypes.count != blocks {
            return ("up_block_types", "has \(upBlockTypes.count) entries but down_block_types has \(blocks)")
        }
        if blockOutChannels.count != blocks {
            return ("block_out_channels", "has \(blockOutChannels.count) entries but down_block_types has \(blocks)")
        }
        return perBlockProblem("only_cross_attention", onlyCrossAttention, blocks: blocks)
            ?? perBlockProblem("num_attention_heads", numAttentionHeads, blocks: blocks)
            ?? perBlockProblem("attention_head_dim", attentionHeadDim, blocks: blocks)
            ?? perBlockProblem("cross_attention_dim", crossAttentionDim, blocks: blocks)
            ?? perBlockProblem("layers_per_block", layersPerBlock, blocks: blocks)
            ?? perBlockProblem("transformer_layers_per_block", transformerLayersPerBlock, blocks: blocks)
    }
}
