import Tensors

/// `torch.nn.Conv2d` with its weights (packed as bf16 when built at `.bf16` precision, unless
/// the parameters ask for float32 convolutions).
struct Conv2D: Sendable {
    let weight: LayerWeight
    let bias: Tensor?
    let stride: Int
    let padding: Padding2D
    /// Float32 Winograd at any precision (`WinogradUse`). The VAE's 3x3 convolutions run on
    /// large planes, where Winograd F(4x4, 3x3) in float32 is faster than the direct bf16 kernel
    /// (decoder convolutions at 512x512: 9.4 s against 11.0 s) and far more accurate; they
    /// transform the weight per call. The other models' layers keep the transformed weight,
    /// since they run on small planes many times.
    let winograd: WinogradUse

    init(_ p: Parameters, in cin: Int, out cout: Int, kernel: Int, stride: Int = 1,
         padding: Padding2D? = nil, bias: Bool = true) throws {
        let w = try p.tensor("weight", [cout, cin, kernel, kernel])
        weight = p.float32Convolutions ? .float32(w) : LayerWeight(w, as: .left)
        winograd = .layer(onLargePlanes: p.float32Convolutions)
        self.bias = bias ? try p.tensor("bias", [cout]) : nil
        self.stride = stride
        self.padding = padding ?? .uniform(kernel / 2)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding,
               winograd: winograd)
    }
}

/// `torch.nn.Linear` with its weights (packed as bf16 when built at `.bf16` precision). Also
/// loads 1x1 convolution weights ([out, in, 1, 1]), which some checkpoints use for the same
/// projections.
struct Linear: Sendable {
    let weight: LayerWeight
    let bias: Tensor?

    init(_ p: Parameters, in fin: Int, out fout: Int, bias: Bool = true) throws {
        let w = p.shape(of: "weight") == [fout, fin, 1, 1]
            ? try p.tensor("weight", [fout, fin, 1, 1]).reshaped([fout, fin]) : try p.tensor("weight", [fout, fin])
        weight = LayerWeight(w, as: .transposedRight)
        self.bias = bias ? try p.tensor("bias", [fout]) : nil
    }

    func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: weight, bias: bias) }
}

/// `torch.nn.GroupNorm` (affine).
struct GroupNorm: Sendable {
    let groups: Int
    let eps: Float
    let weight: Tensor
    let bias: Tensor

    init(_ p: Parameters, groups: Int, channels: Int, eps: Float) throws {
        self.groups = groups
        self.eps = eps
        weight = try p.tensor("weight", [channels])
        bias = try p.tensor("bias", [channels])
    }

    func callAsFunction(_ x: Tensor, activation: FusedActivation = .none) -> Tensor {
        groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, activation: activation)
    }
}

/// `torch.nn.LayerNorm` (affine) over the last dimension.
struct LayerNorm: Sendable {
    let eps: Float
    let weight: Tensor
    let bias: Tensor

    init(_ p: Parameters, channels: Int, eps: Float) throws {
        self.eps = eps
        weight = try p.tensor("weight", [channels])
        bias = try p.tensor("bias", [channels])
    }

    func callAsFunction(_ x: Tensor) -> Tensor { layerNorm(x, weight: weight, bias: bias, eps: eps) }
}
