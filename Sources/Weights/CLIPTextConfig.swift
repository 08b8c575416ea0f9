import Foundation

/// transformers' `CLIPTextConfig` (`text_encoder/config.json`). Defaults are transformers 5's
/// (`models/clip/configuration_clip.py`, the clip-vit-base-patch32 text tower); SD 1.x files set
/// hidden 768 / 12 heads. A full `CLIPConfig` file is accepted too: its `text_config` is used.
public struct CLIPTextConfig: JSONConfiguration, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var projectionDim: Int?
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var maxPositionEmbeddings: Int
    /// "quick_gelu" for OpenAI CLIP (SD 1.x), "gelu" for OpenCLIP (SD 2.x).
    public var hiddenAct: String
    public var layerNormEps: Double
    public var attentionDropout: Double
    public var initializerRange: Double
    public var initializerFactor: Double
    public var padTokenId: Int?
    public var bosTokenId: Int?
    /// The end-of-text id (the first, when the file gives a list).
    public var eosTokenId: Int?

    public init(
        vocabSize: Int = 49408,
        hiddenSize: Int = 512,
        intermediateSize: Int = 2048,
        projectionDim: Int? = 512,
        numHiddenLayers: Int = 12,
        numAttentionHeads: Int = 8,
        maxPositionEmbeddings: Int = 77,
        hiddenAct: String = "quick_gelu",
        layerNormEps: Double = 1e-5,
        attentionDropout: Double = 0,
        initializerRange: Double = 0.02,
        initializerFactor: Double = 1,
        padTokenId: Int? = 1,
        bosTokenId: Int? = 49406,
        eosTokenId: Int? = 49407
    ) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.projectionDim = projectionDim
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.attentionDropout = attentionDropout
        self.initializerRange = initializerRange
        self.initializerFactor = initializerFactor
        self.padTokenId = padTokenId
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case projectionDim = "projection_dim"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case maxPositionEmbeddings = "max_position_embeddings"
        case hiddenAct = "hidden_act"
        case layerNormEps = "layer_norm_eps"
        case attentionDropout = "attention_dropout"
        case initializerRange = "initializer_range"
        case initializerFactor = "initializer_factor"
        case padTokenId = "pad_token_id"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
    }

    private enum WrapperKeys: String, CodingKey {
        case textConfig = "text_config"
        case hiddenSize = "hidden_size"
    }

    public init(from decoder: Decoder) throws {
        // A full CLIPConfig nests the text tower's settings under text_config.
        let wrapper = try decoder.container(keyedBy: WrapperKeys.self)
        if wrapper.contains(.textConfig), !wrapper.contains(.hiddenSize),
           !(try wrapper.decodeNil(forKey: .textConfig)) {
            self = try wrapper.decode(CLIPTextConfig.self, forKey: .textConfig)
            return
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CLIPTextConfig()
        vocabSize = try c.value(.vocabSize, or: d.vocabSize)
        hiddenSize = try c.value(.hiddenSize, or: d.hiddenSize)
        intermediateSize = try c.value(.intermediateSize, or: d.intermediateSize)
        projectionDim = try c.nullable(.projectionDim, or: d.projectionDim)
        numHiddenLayers = try c.value(.numHiddenLayers, or: d.numHiddenLayers)
        numAttentionHeads = try c.value(.numAttentionHeads, or: d.numAttentionHeads)
        maxPositionEmbeddings = try c.value(.maxPositionEmbeddings, or: d.maxPositionEmbeddings)
        hiddenAct = try c.value(.hiddenAct, or: d.hiddenAct)
        layerNormEps = try c.value(.layerNormEps, or: d.layerNormEps)
        attentionDropout = try c.value(.attentionDropout, or: d.attentionDropout)
        initializerRange = try c.value(.initializerRange, or: d.initializerRange)
        initializerFactor = try c.value(.initializerFactor, or: d.initializerFactor)
        padTokenId = try c.nullable(.padTokenId, or: d.padTokenId)
        bosTokenId = try c.nullable(.bosTokenId, or: d.bosTokenId)
        // transformers allows a list of end ids; SD only needs one.
        eosTokenId = try c.nullable(.eosTokenId, or: d.eosTokenId.map { OneOrMany<Int>.one($0) })?.first
    }

    /// Channels per attention head.
    public var headDim: Int { hiddenSize / numAttentionHeads }
}

extension CLIPTextConfig: ConsistencyChecked {
    func inconsistency() -> (key: String, problem: String)? {
        // Sizes from a file are bounded before anything is allocated from them (a layer count of
        // 10⁹ would otherwise reserve that many layers); the bounds are far above any CLIP.
        for (key, value, limit) in [("num_hidden_layers", numHiddenLayers, 256), ("hidden_size", hiddenSize, 1 << 16),
                                    ("intermediate_size", intermediateSize, 1 << 18), ("num_attention_heads", numAttentionHeads, 1024),
                                    ("vocab_size", vocabSize, 1 << 22), ("max_position_embeddings", maxPositionEmbeddings, 1 << 16)]
            where value < 1 || value > limit {
            return (key, "is \(value); it must be between 1 and \(limit)")
        }
        guard numAttentionHeads > 0, hiddenSize % numAttentionHeads == 0 else {
            return ("num_attention_heads", "is \(numAttentionHeads), which does not divide hidden_size "
                + "\(hiddenSize)")
        }
        return nil
    }
}
