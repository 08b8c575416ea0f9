/// Element types a safetensors file may hold (the names are those of the header's `dtype` field).
public enum DType: String, Sendable, CaseIterable, Equatable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// Whether values are floating point (as opposed to integers or booleans).
    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: return true
        default: return false
        }
    }
}

/// Floating-point formats the writer can store `Tensor` values in.
public enum StorageType: String, Sendable, CaseIterable, Equatable {
    case f32, f16, bf16

    /// The header dtype this storage type is written as.
    public var dtype: DType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        }
    }
}

/// Where and how one tensor is stored in a safetensors (or PyTorch) file.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Byte range inside the file (the header's `data_offsets` shifted past the header; in a PyTorch
    /// file, inside the tensor's storage entry: for a non-contiguous tensor, the span its elements lie in).
    public var byteRange: Range<Int>

    public init(name: String, dtype: DType, shape: [Int], byteRange: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.byteRange = byteRange
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}
