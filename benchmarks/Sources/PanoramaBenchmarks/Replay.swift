import Tensors

/// Replays a model's layers one by one through the Tensors kernels (conv2d, linear,
/// scaledDotProductAttention, groupNorm, layerNorm) with the shapes the config implies and
/// random data, timing each kind separately. Compared with the whole-model time, the difference
/// is what the model spends outside these kernels (activations, GEGLU, residual adds,
/// concatenation, layout changes, allocation).
extension FlopCount.Op {
    /// The name `--only` selects it by.
    var kind: String {
        switch self {
        case .conv: return "conv"
        case .linear: return "linear"
        case .attention: return "attention"
        case .groupNorm: return "groupnorm"
        case .layerNorm: return "layernorm"
        }
    }
}

struct LayerReplay {
    private var tensors: [[Int]: Tensor] = [:]
    /// Each convolution's and linear layer's weight as the models hold it (packed at bf16, the
    /// kept Winograd transform of a 3x3 stride-1 convolution), by op index.
    private var layers: [Int: (weight: LayerWeight, winograd: WinogradUse)] = [:]
    private var seed: UInt64 = 99
    /// Log every op's time to standard error.
    var verbose = false
    /// The ops are the VAE's: float32 convolution weights, Winograd at any precision.
    var vae = false

    /// A random tensor of `shape` with standard deviation `std`, shared by every op that asks for
    /// the same shape (so the replay holds one copy per shape, not the whole model's weights).
    private mutating func tensor(_ shape: [Int], std: Float = 1) -> Tensor {
        if let t = tensors[shape] { return t }
        seed &+= 1
        var state = seed
        let scale = std * Float(3.0.squareRoot()) / Float(1 << 31)
        let t = Tensor(uninitializedShape: shape) { out in
            for i in 0..<out.count {
                out[i] = Float(Int32(truncatingIfNeeded: RandomWeights.splitMix64(&state) >> 32)) * scale
            }
        }
        tensors[shape] = t
        return t
    }

    /// Seconds per kind ("conv", "linear", "attention", "groupnorm", "layernorm") for one pass.
    mutating func run(_ ops: [FlopCount.Op]) -> [String: Double] {
        var seconds: [String: Double] = [:]
        var current = ""
        func timed(_ kind: String, _ body: () -> Tensor) {
            let t0 = now()
            let out = body()
            seconds[kind, default: 0] += now() - t0
            if verbose { log(String(format: "  %@ %.3f s", current, now() - t0)) }
            precondition(out.count > 0)
        }
        for (index, op) in ops.enumerated() {
            if verbose { current = "\(op)" }
            switch op {
            case let .conv(b, cin, cout, k, stride, h, w):
                let x = tensor([b, cin, h * stride, w * stride])
                if layers[index] == nil {
                    let weight = tensor([cout, cin, k, k], std: 0.02)
                    layers[index] = (vae ? .float32(weight) : LayerWeight(weight, as: .left), .layer(onLargePlanes: vae))
                }
                let (weight, winograd) = layers[index]!, bias = tensor([cout], std: 0.02)
                timed("conv") { conv2d(x, weight: weight, bias: bias, stride: stride, padding: .uniform(k / 2), winograd: winograd) }
            case let .linear(rows, i, o):
                let x = tensor([rows, i]), bias = tensor([o], std: 0.02)
                if layers[index] == nil { layers[index] = (LayerWeight(tensor([o, i], std: 0.02), as: .transposedRight), .atFP32) }
                let weight = layers[index]!.weight
                timed("linear") { linear(x, weight: weight, bias: bias) }
            case let .attention(b, nq, nk, c, heads):
                let q = tensor([b, nq, c]), kv = tensor([b, nk, c])
                timed("attention") { scaledDotProductAttention(q: q, k: kv, v: kv, heads: heads) }
            case let .groupNorm(b, c, h, w):
                let x = tensor([b, c, h, w]), g = tensor([c]), beta = tensor([c], std: 0.02)
                timed("groupnorm") { groupNorm(x, groups: 32, weight: g, bias: beta, eps: 1e-5, activation: .silu) }
            case let .layerNorm(rows, c):
                let x = tensor([rows, c]), g = tensor([c]), beta = tensor([c], std: 0.02)
                timed("layernorm") { layerNorm(x, weight: g, bias: beta, eps: 1e-5) }
            }
        }
        return seconds
    }
}
