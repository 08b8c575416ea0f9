import COpenBLAS
import Dispatch

/// Process-wide compute settings shared by every kernel.
public enum Compute {
    nonisolated(unsafe) private static var _threads = 2

    /// Worker threads used by the kernels and by OpenBLAS (default 2).
    public static var threads: Int {
        get { _threads }
        set {
            _threads = max(1, newValue)
            openblas_set_num_threads(Int32(_threads))
        }
    }

    /// Runs `body` with OpenBLAS limited to one thread, for callers that parallelise over many
    /// small GEMMs themselves.
    public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(_threads)) }
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
