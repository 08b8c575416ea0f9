import CKernels
import COpenBLAS
import Dispatch

/// Arithmetic of the large matrix products (convolutions, linear layers, attention).
public enum Precision: String, Sendable, CaseIterable {
    /// float32 everywhere (OpenBLAS).
    case fp32
    /// Operands rounded to bfloat16, products summed in float32 (own AVX512-BF16 kernel).
    /// Everything else (normalisation, softmax, the scheduler) stays float32.
    case bf16
}

/// Process-wide compute settings shared by every kernel.
public enum Compute {
    nonisolated(unsafe) private static var _threads = 2
    nonisolated(unsafe) private static var _singleThreadedBLAS = false

    /// Precision of the large matrix products (default fp32). Process-wide, like `threads`.
    nonisolated(unsafe) public static var precision = Precision.fp32

    /// Whether bf16 products run on the CPU's AVX512-BF16 instructions. Without them `.bf16`
    /// still works, through a portable kernel that is far slower than fp32.
    public static var hasFastBF16: Bool { pk_gemm_fast(PK_BF16) != 0 }

    /// Whether float32 products run on the own AVX-512 GEMM instead of OpenBLAS (default: where
    /// the CPU has AVX-512). OpenBLAS's kernels can be narrower than the CPU — its own choice, or
    /// the one `OPENBLAS_CORETYPE` forces — and the own kernel also packs attention's keys and
    /// values once per block. Process-wide; benchmarks switch it to compare.
    nonisolated(unsafe) public static var ownFloat32GEMM = pk_gemm_fast(PK_F32) != 0

    /// The own GEMM's format for products at `precision`, or nil where float32 goes to OpenBLAS.
    static var gemmFormat: pk_format? {
        precision == .bf16 ? PK_BF16 : ownFloat32GEMM ? PK_F32 : nil
    }

    /// True inside `withSingleThreadedBLAS`: the caller already runs one product per worker.
    static var singleThreadedBLAS: Bool { _singleThreadedBLAS }

    /// The kernel family OpenBLAS runs ("Haswell", "Cooperlake", …): its own choice for the CPU,
    /// or the one `OPENBLAS_CORETYPE` forced when the library loaded.
    public static var blasCoreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Worker threads used by the kernels and by OpenBLAS (default 2).
    public static var threads: Int {
        get { _threads }
        set {
            _threads = max(1, newValue)
            openblas_set_num_threads(Int32(_threads))
        }
    }

    /// Keeps freed blocks of up to 32 MiB in the heap for reuse instead of unmapping them. A
    /// model call allocates and frees the same sizes over and over, and by default glibc maps
    /// every block above 128 KiB afresh: a page fault and a zeroed page for every 4 KiB touched,
    /// about 12 % of a bf16 UNet call. Call once at start-up.
    public static func retainFreedMemory() {
        pk_retain_freed_memory()
    }

    /// Runs `body` with OpenBLAS limited to one thread, for callers that parallelise over many
    /// small GEMMs themselves.
    public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(1)
        _singleThreadedBLAS = true
        defer {
            _singleThreadedBLAS = false
            openblas_set_num_threads(Int32(_threads))
        }
        return try body()
    }

    /// Runs `body(i)` for `i` in `0..<count`, spread over `threads` workers in contiguous chunks.
    /// Small jobs run inline: the dispatch overhead would dominate.
    @inline(__always)
    public static func parallelFor(_ count: Int, minimumPerThread: Int = 1, _ body: (Int) -> Void) {
        let workers = min(threads, count / max(1, minimumPerThread))
        if workers <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // The kernels hand disjoint index ranges to each worker; the closure is only
            // called while this function runs.
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let start = count * w / workers
                let end = count * (w + 1) / workers
                for i in start..<end { body(i) }
            }
        }
    }
}
