import CKernels

/// A layer's weight matrix packed once into the panels the own GEMM reads: rounded to bfloat16
/// (half the memory of float32) or float32. Models built while `Compute.precision` is `.bf16`
/// keep their convolution and linear weights this way, so no call re-packs them and the float32
/// copy is not kept.
public final class PackedWeight: @unchecked Sendable {
    /// Which operand of the product the weight is: a convolution's weight [out, in·kh·kw] is
    /// the left operand (A); a linear layer's weight [out, in] is the transposed right operand (Bᵀ).
    public enum Operand: Sendable { case left, transposedRight }

    /// The shape of the weight it was packed from ([out, in, kh, kw] or [out, in]).
    public let shape: [Int]
    public let operand: Operand
    /// Output features, and input features times kernel taps.
    public let rows: Int, columns: Int
    /// The GEMM format of the panels.
    let format: pk_format
    let panels: UnsafeMutablePointer<UInt32>
    let count: Int

    /// Packs `weight`, whose first dimension is the output features, in bf16 (`float32` false)
    /// or float32.
    public init(_ weight: Tensor, as operand: Operand, float32: Bool = false) {
        shape = weight.shape
        self.operand = operand
        format = float32 ? PK_F32 : PK_BF16
        rows = weight.shape[0]
        columns = weight.count / max(1, rows)
        switch operand {
        case .left: count = pk_packed_a_count(format, rows, columns)
        case .transposedRight: count = pk_packed_b_count(format, columns, rows)
        }
        panels = .allocate(capacity: count)
        weight.withUnsafeBufferPointer { wp in
            switch operand {
            case .left: pk_pack_a(format, 0, rows, columns, wp.baseAddress!, columns, panels)
            case .transposedRight: pk_pack_b(format, 1, columns, rows, wp.baseAddress!, columns, panels)
            }
        }
    }

    deinit { panels.deallocate() }

    /// Bytes of the packed panels.
    public var bytes: Int { count * MemoryLayout<UInt32>.size }
}

/// A convolution's or linear layer's weight: float32, or packed panels.
public enum LayerWeight: Sendable {
    case float32(Tensor)
    case packed(PackedWeight)

    /// A weight for a layer built now: packed as bf16 when `Compute.precision` is `.bf16`; at
    /// fp32 packed as float32 for the own GEMM (`Compute.ownFloat32GEMM`) where every product
    /// of the layer goes through it — linear layers and 1x1 convolutions; larger kernels stay
    /// float32, since Winograd transforms the weight itself.
    public init(_ weight: Tensor, as operand: PackedWeight.Operand) {
        let pointwise = weight.rank < 2 || weight.count == weight.shape[0] * weight.shape[1]
        if Compute.precision == .bf16 {
            self = .packed(PackedWeight(weight, as: operand))
        } else if Compute.ownFloat32GEMM && (operand == .transposedRight || pointwise) {
            self = .packed(PackedWeight(weight, as: operand, float32: true))
        } else {
            self = .float32(weight)
        }
    }

    public var shape: [Int] {
        switch self {
        case .float32(let t): return t.shape
        case .packed(let p): return p.shape
        }
    }

    /// Calls `body` with the float32 values, or with nil for a packed weight.
    func withFloat32Pointer<R>(_ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
        switch self {
        case .float32(let t): return try t.withUnsafeBufferPointer { try body($0.baseAddress!) }
        case .packed: return try body(nil)
        }
    }
}
