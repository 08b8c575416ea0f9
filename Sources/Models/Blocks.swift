import Tensors

/// diffusers' `ResnetBlock2D` (pre-norm, SiLU, optional time-embedding projection, 1x1 shortcut
/// when the channel count changes).
struct ResnetBlock2D: Sendable {
    let norm1: GroupNorm, conv1: Conv2D
    let timeProjection: Linear?
    let norm2: GroupNorm, conv2: Conv2D
    let shortcut: Conv2D?
    let outputScale: Float

    init(_ p: Parameters, in cin: Int, out cout: Int, timeChannels: Int?, groups: Int, eps: Float,
         outputScale: Float = 1) throws {
        norm1 = try GroupNorm(p.scope("norm1"), groups: groups, channels: cin, eps: eps)
        conv1 = try Conv2D(p.scope("conv1"), in: cin, out: cout, kernel: 3)
        timeProjection = try timeChannels.map { try Linear(p.scope("time_emb_proj"), in: $0, out: cout) }
        norm2 = try GroupNorm(p.scope("norm2"), groups: groups, channels: cout, eps: eps)
        conv2 = try Conv2D(p.scope("conv2"), in: cout, out: cout, kernel: 3)
        shortcut = cin == cout ? nil : try Conv2D(p.scope("conv_shortcut"), in: cin, out: cout, kernel: 1)
        self.outputScale = outputScale
    }

    /// `timeEmbedding` is the already-activated (SiLU) embedding, [B, timeChannels].
    func callAsFunction(_ x: Tensor, timeEmbedding: Tensor? = nil) -> Tensor {
        var h = conv1(norm1(x, activation: .silu))
        if let timeProjection, let timeEmbedding {
            let t = timeProjection(timeEmbedding)  // [B, C]
            let (b, c) = (h.shape[0], h.shape[1])
            let plane = h.count / (b * c)
            h.withUnsafeMutableBufferPointer { hp in
                t.withUnsafeBufferPointer { tp in
                    for bc in 0..<(b * c) {
                        let v = tp[bc], row = hp.baseAddress! + bc * plane
                        for i in 0..<plane { row[i] += v }
                    }
                }
            }
        }
        h = conv2(norm2(h, activation: .silu))
        var out = shortcut.map { $0(x) } ?? x
        out += h
        return outputScale == 1 ? out : out / outputScale
    }
}

/// diffusers' `Downsample2D` with a convolution. Padding 0 means the asymmetric (0, 1, 0, 1)
/// pad of the VAE encoder.
struct Downsample2D: Sendable {
    let conv: Conv2D

    init(_ p: Parameters, channels: Int, padding: Int) throws {
        let pad = padding == 0 ? Padding2D(top: 0, bottom: 1, left: 0, right: 1) : .uniform(padding)
        conv = try Conv2D(p.scope("conv"), in: channels, out: channels, kernel: 3, stride: 2, padding: pad)
    }

    func callAsFunction(_ x: Tensor) -> Tensor { conv(x) }
}

/// diffusers' `Upsample2D`: nearest-neighbour resize (2x, or to the skip connection's size) and a
/// 3x3 convolution.
struct Upsample2D: Sendable {
    let conv: Conv2D

    init(_ p: Parameters, channels: Int) throws {
        conv = try Conv2D(p.scope("conv"), in: channels, out: channels, kernel: 3)
    }

    func callAsFunction(_ x: Tensor, size: (height: Int, width: Int)? = nil) -> Tensor {
        let size = size ?? (x.shape[2] * 2, x.shape[3] * 2)
        return conv(x.upsampledNearest(height: size.height, width: size.width))
    }
}

/// diffusers' `Attention` as used by the transformer blocks: q/k/v projections without bias
/// (or with, for the VAE), multi-head attention, output projection.
struct Attention: Sendable {
    let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear
    let heads: Int

    init(_ p: Parameters, queryDim: Int, contextDim: Int? = nil, heads: Int, headDim: Int,
         projectionBias: Bool = false) throws {
        let inner = heads * headDim
        // Pre-0.14 diffusers VAEs name the projections query/key/value/proj_attn.
        let legacy = !p.contains("to_q.weight") && p.contains("query.weight")
        toQ = try Linear(p.scope(legacy ? "query" : "to_q"), in: queryDim, out: inner, bias: projectionBias)
        toK = try Linear(p.scope(legacy ? "key" : "to_k"), in: contextDim ?? queryDim, out: inner,
                         bias: projectionBias)
        toV = try Linear(p.scope(legacy ? "value" : "to_v"), in: contextDim ?? queryDim, out: inner,
                         bias: projectionBias)
        toOut = try Linear(p.scope(legacy ? "proj_attn" : "to_out.0"), in: inner, out: queryDim)
        self.heads = heads
    }

    /// `x` is [B, N, C]; `context` (cross-attention) is [B, M, contextDim].
    func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let kv = context ?? x
        let o = scaledDotProductAttention(q: toQ(x), k: toK(kv), v: toV(kv), heads: heads)
        return toOut(o)
    }
}

extension Compute {
    /// Token rows per block of the transformer blocks' feed-forward; nil (default) keeps its
    /// hidden layer at 4 Mi floats (1600 rows at width 320).
    nonisolated(unsafe) public static var feedForwardBlockRows: Int? = nil
}

/// diffusers' `BasicTransformerBlock` in Stable Diffusion's configuration: self-attention,
/// cross-attention and a GEGLU feed-forward, each pre-LayerNorm with a residual.
struct BasicTransformerBlock: Sendable {
    let norm1: LayerNorm, attn1: Attention
    let norm2: LayerNorm, attn2: Attention
    let norm3: LayerNorm, ffIn: Linear, ffOut: Linear

    init(_ p: Parameters, dim: Int, heads: Int, headDim: Int, contextDim: Int) throws {
        norm1 = try LayerNorm(p.scope("norm1"), channels: dim, eps: 1e-5)
        attn1 = try Attention(p.scope("attn1"), queryDim: dim, heads: heads, headDim: headDim)
        norm2 = try LayerNorm(p.scope("norm2"), channels: dim, eps: 1e-5)
        attn2 = try Attention(p.scope("attn2"), queryDim: dim, contextDim: contextDim, heads: heads,
                              headDim: headDim)
        norm3 = try LayerNorm(p.scope("norm3"), channels: dim, eps: 1e-5)
        ffIn = try Linear(p.scope("ff.net.0.proj"), in: dim, out: dim * 8)
        ffOut = try Linear(p.scope("ff.net.2"), in: dim * 4, out: dim)
    }

    func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        var h = x
        h += attn1(norm1(h))
        h += attn2(norm2(h), context: context)
        h += feedForward(norm3(h))
        return h
    }

    /// The GEGLU feed-forward over blocks of token rows: its hidden layer (8x the width) then
    /// stays below glibc's 32 MB mmap threshold, so its buffers are reused from the heap
    /// instead of being mapped and page-faulted anew in every call (84 MB per call at the
    /// 64x64 level otherwise), and it stays closer to the cache. Rows are independent, so the
    /// result is the same as in one piece.
    private func feedForward(_ x: Tensor) -> Tensor {
        let dim = x.shape.last!, rows = x.count / dim
        let block = Compute.feedForwardBlockRows ?? max(64, (4 << 20) / (8 * dim) / 64 * 64)
        guard rows > block else { return ffOut(geglu(ffIn(x))) }
        return Tensor(uninitializedShape: x.shape) { out in
            for r0 in stride(from: 0, to: rows, by: block) {
                let n = min(block, rows - r0)
                let part = Tensor(shape: [n, dim], data: Array(x.data[(r0 * dim)..<((r0 + n) * dim)]))
                let y = ffOut(geglu(ffIn(part)))
                y.withUnsafeBufferPointer { (out.baseAddress! + r0 * dim).update(from: $0.baseAddress!, count: n * dim) }
            }
        }
    }
}

/// diffusers' `Transformer2DModel` for Stable Diffusion: GroupNorm, input projection (1x1
/// convolution, or linear with `use_linear_projection`), transformer blocks on the token
/// sequence, output projection, residual.
struct Transformer2D: Sendable {
    let norm: GroupNorm
    let projIn: Linear, projOut: Linear
    let blocks: [BasicTransformerBlock]

    init(_ p: Parameters, channels: Int, heads: Int, contextDim: Int, layers: Int, groups: Int) throws {
        norm = try GroupNorm(p.scope("norm"), groups: groups, channels: channels, eps: 1e-6)
        // A 1x1 convolution and a linear layer compute the same map; only the weight layout
        // differs, and `Linear` accepts both.
        projIn = try Linear(p.scope("proj_in"), in: channels, out: channels)
        projOut = try Linear(p.scope("proj_out"), in: channels, out: channels)
        blocks = try (0..<layers).map {
            try BasicTransformerBlock(p.scope("transformer_blocks", $0), dim: channels, heads: heads,
                                      headDim: channels / heads, contextDim: contextDim)
        }
    }

    func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        let (h, w) = (x.shape[2], x.shape[3])
        var t = projIn(norm(x).nchwToTokens())
        for block in blocks { t = block(t, context: context) }
        return projOut(t).tokensToNCHW(height: h, width: w) + x
    }
}
