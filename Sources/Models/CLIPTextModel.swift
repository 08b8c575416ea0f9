import Tensors
import Weights

/// The text encoder of Stable Diffusion, transformers' `CLIPTextModel` (OpenAI CLIP ViT-L/14's text
/// tower for SD 1.x, OpenCLIP ViT-H's for SD 2.x): token and position embeddings, pre-LayerNorm
/// transformer layers with a causal mask, final LayerNorm.
public struct CLIPTextModel: Sendable {
    public let config: CLIPTextConfig

    private let tokenEmbedding: Tensor      // [vocab, hidden]
    private let positionEmbedding: Tensor   // [positions, hidden]
    private let layers: [EncoderLayer]
    private let finalNorm: LayerNorm

    /// Loads the weights, with or without transformers' `text_model.` key prefix.
    public init(config: CLIPTextConfig, weights: WeightSet) throws {
        guard let activation = Activation(configName: config.hiddenAct) else {
            throw ModelError.unsupported(component: "text_encoder", "hidden_act \(config.hiddenAct)")
        }
        guard config.hiddenSize % config.numAttentionHeads == 0 else {
            throw ModelError.invalidConfig(component: "text_encoder",
                "hidden_size \(config.hiddenSize) is not divisible by num_attention_heads \(config.numAttentionHeads)")
        }
        self.config = config
        let p = Parameters(weights.normalizingPrefix("text_model."))
        let d = config.hiddenSize
        tokenEmbedding = try p.tensor("embeddings.token_embedding.weight", [config.vocabSize, d])
        positionEmbedding = try p.tensor("embeddings.position_embedding.weight", [config.maxPositionEmbeddings, d])
        layers = try (0..<config.numHiddenLayers).map {
            try EncoderLayer(p.scope("encoder.layers", $0), config: config, activation: activation)
        }
        finalNorm = try LayerNorm(p.scope("final_layer_norm"), channels: d, eps: Float(config.layerNormEps))
    }

    /// A vector that takes the place of one token's embedding (before the position embedding is
    /// added): how textual-inversion embeddings enter the encoder, as A1111 and diffusers place them.
    public struct TokenVector: Sendable {
        /// Which sequence of the batch, and which position in it.
        public var sequence: Int
        public var position: Int
        /// `hidden_size` values.
        public var values: ArraySlice<Float>

        public init(sequence: Int, position: Int, values: ArraySlice<Float>) {
            self.sequence = sequence
            self.position = position
            self.values = values
        }
    }

    /// Encodes token sequences (each of the same length, ≤ max_position_embeddings) to
    /// [B, tokens, hidden]: the final layer's output after the final LayerNorm, or with
    /// `clipSkip` = k the output k layers earlier (then final-normed, as diffusers does).
    /// `vectors` replace the token embeddings at their positions (the ids there are ignored).
    public func callAsFunction(_ ids: [[Int]], clipSkip: Int = 0, vectors: [TokenVector] = []) throws -> Tensor {
        try hiddenStates(ids, layerCount: layers.count - clipSkip, vectors: vectors)
    }

    /// The pooled output: the final hidden state at each sequence's end-of-text token.
    public func pooled(_ ids: [[Int]]) throws -> Tensor {
        let h = try hiddenStates(ids, layerCount: layers.count)
        let (n, d) = (h.shape[1], h.shape[2])
        var out = [Float]()
        for (b, seq) in ids.enumerated() {
            // transformers' legacy rule for configs with eos_token_id 2: the highest id is EOS.
            let position = config.eosTokenId == 2
                ? seq.indices.max { seq[$0] < seq[$1] }!
                : (seq.firstIndex(of: config.eosTokenId ?? 49407) ?? seq.count - 1)
            out += h.data[((b * n + position) * d)..<((b * n + position + 1) * d)]
        }
        return Tensor(shape: [ids.count, d], data: out)
    }

    private func hiddenStates(_ ids: [[Int]], layerCount: Int, vectors: [TokenVector] = []) throws -> Tensor {
        guard let n = ids.first?.count, ids.allSatisfy({ $0.count == n }) else {
            throw ModelError.invalidInput("text encoder: token sequences must be non-empty and of equal length")
        }
        guard n <= config.maxPositionEmbeddings else {
            throw ModelError.invalidInput("text encoder: \(n) tokens exceed max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        guard layerCount >= 1 else {
            throw ModelError.invalidInput("text encoder: clip skip leaves no layer (the model has \(layers.count))")
        }
        let d = config.hiddenSize
        var h = Tensor(zeros: [ids.count, n, d])
        try h.withUnsafeMutableBufferPointer { hp in
            try tokenEmbedding.withUnsafeBufferPointer { tp in
                try positionEmbedding.withUnsafeBufferPointer { pp in
                    for (b, seq) in ids.enumerated() {
                        for (i, id) in seq.enumerated() {
                            guard id >= 0 && id < config.vocabSize else {
                                throw ModelError.invalidInput("text encoder: token id \(id) outside the vocabulary of \(config.vocabSize)")
                            }
                            let dst = hp.baseAddress! + (b * n + i) * d
                            for j in 0..<d { dst[j] = tp[id * d + j] + pp[i * d + j] }
                        }
                    }
                    for v in vectors {
                        guard v.sequence >= 0 && v.sequence < ids.count && v.position >= 0 && v.position < n else {
                            throw ModelError.invalidInput("text encoder: a token vector at sequence \(v.sequence), position \(v.position) lies outside the \(ids.count)x\(n) batch")
                        }
                        guard v.values.count == d else {
                            throw ModelError.invalidInput("text encoder: a token vector has \(v.values.count) values, the encoder's width is \(d)")
                        }
                        let dst = hp.baseAddress! + (v.sequence * n + v.position) * d
                        for (j, x) in v.values.enumerated() { dst[j] = x + pp[v.position * d + j] }
                    }
                }
            }
        }
        for layer in layers.prefix(layerCount) { h = layer(h) }
        return finalNorm(h)
    }
}

private struct EncoderLayer: Sendable {
    let norm1: LayerNorm, norm2: LayerNorm
    let q: Linear, k: Linear, v: Linear, out: Linear
    let fc1: Linear, fc2: Linear
    let heads: Int
    let activation: Activation

    init(_ p: Parameters, config c: CLIPTextConfig, activation: Activation) throws {
        let d = c.hiddenSize, eps = Float(c.layerNormEps)
        norm1 = try LayerNorm(p.scope("layer_norm1"), channels: d, eps: eps)
        norm2 = try LayerNorm(p.scope("layer_norm2"), channels: d, eps: eps)
        q = try Linear(p.scope("self_attn.q_proj"), in: d, out: d)
        k = try Linear(p.scope("self_attn.k_proj"), in: d, out: d)
        v = try Linear(p.scope("self_attn.v_proj"), in: d, out: d)
        out = try Linear(p.scope("self_attn.out_proj"), in: d, out: d)
        fc1 = try Linear(p.scope("mlp.fc1"), in: d, out: c.intermediateSize)
        fc2 = try Linear(p.scope("mlp.fc2"), in: c.intermediateSize, out: d)
        heads = c.numAttentionHeads
        self.activation = activation
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        let n = norm1(h)
        h += out(scaledDotProductAttention(q: q(n), k: k(n), v: v(n), heads: heads, causal: true))
        h += fc2(activate(fc1(norm2(h)), activation))
        return h
    }
}
