import CKernels
import Foundation

/// Element-wise activation functions used by the models.
public enum Activation: String, Sendable {
    /// x · sigmoid(x)
    case silu
    /// Exact GELU: x · Φ(x), through erf.
    case gelu
    /// GELU's tanh approximation (`gelu_pytorch_tanh`).
    case geluTanh = "gelu_pytorch_tanh"
    /// CLIP's x · sigmoid(1.702 x).
    case quickGelu = "quick_gelu"

    /// Parses the names diffusers and transformers configs use.
    public init?(configName: String) {
        switch configName {
        case "silu", "swish": self = .silu
        case "gelu": self = .gelu
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": self = .geluTanh
        case "quick_gelu": self = .quickGelu
        default: return nil
        }
    }

    @inline(__always)
    public func callAsFunction(_ x: Float) -> Float {
        switch self {
        case .silu: return x / (1 + expf(-x))
        case .gelu: return 0.5 * x * (1 + erff(x * 0.70710678118654752))
        case .geluTanh:
            return 0.5 * x * (1 + tanhf(0.79788456080286536 * (x + 0.044715 * x * x * x)))
        case .quickGelu: return x / (1 + expf(-1.702 * x))
        }
    }
}

/// Applies `activation` to every element.
public func activate(_ x: Tensor, _ activation: Activation) -> Tensor {
    var y = x
    y.withUnsafeMutableBufferPointer { p in
        let base = p.baseAddress!
        let count = p.count
        let chunk = 1 << 14
        Compute.parallelFor((count + chunk - 1) / chunk) { c in
            let start = c * chunk, n = min(count, start + chunk) - start
            if activation == .silu {
                pk_silu(base + start, n)
            } else {
                for i in start..<(start + n) { base[i] = activation(base[i]) }
            }
        }
    }
    return y
}

/// GEGLU's gate: the input's last dimension holds [hidden, gate]; returns hidden · gelu(gate).
public func geglu(_ x: Tensor) -> Tensor {
    let d2 = x.shape.last!, d = d2 / 2
    let rows = x.count / d2
    var shape = x.shape
    shape[shape.count - 1] = d
    return Tensor(uninitializedShape: shape) { out in
        x.withUnsafeBufferPointer { xp in
            let src = xp.baseAddress!, dst = out.baseAddress!
            let chunk = 16
            Compute.parallelFor((rows + chunk - 1) / chunk) { c in
                let r0 = c * chunk
                pk_geglu(src + r0 * d2, dst + r0 * d, min(chunk, rows - r0), d)
            }
        }
    }
}
