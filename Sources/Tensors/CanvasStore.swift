import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Errors of a `CanvasStore`'s temporary file.
public struct CanvasStoreError: Error, CustomStringConvertible {
    public let description: String
}

/// A [C, H, W] feature map held outside any one tensor, written and read in rectangles — the
/// intermediate results of a tiled network pass. Maps above a size limit live in an unlinked
/// temporary file instead of memory, so a pass over a huge image needs memory for its tiles only
/// (the operating system's page cache still speeds the file up when memory is free).
///
/// Values are stored pixel-major ([H][W][C]) so that a rectangle is one contiguous run per row.
public final class CanvasStore: @unchecked Sendable {
    public let channels: Int, height: Int, width: Int
    /// Whether the values live in a temporary file rather than memory.
    public var isFileBacked: Bool { memory == nil }

    private let memory: UnsafeMutablePointer<Float>?
    private let file: Int32

    private static let accounting = NSLock()
    nonisolated(unsafe) private static var fileBytes = 0, peakBytes = 0

    /// The most bytes that file-backed stores held at once in this process (temporary disk).
    public static var peakFileBytes: Int { accounting.withLock { peakBytes } }

    private static func account(_ bytes: Int) {
        accounting.withLock {
            fileBytes += bytes
            peakBytes = max(peakBytes, fileBytes)
        }
    }

    /// A zero-filled map, in memory when it takes at most `memoryLimit` bytes, otherwise in a
    /// temporary file under `directory`.
    public init(channels: Int, height: Int, width: Int, memoryLimit: Int = .max,
                directory: String = NSTemporaryDirectory()) throws {
        precondition(channels > 0 && height > 0 && width > 0, "CanvasStore: empty map")
        self.channels = channels
        self.height = height
        self.width = width
        let count = channels * height * width
        if count * MemoryLayout<Float>.size <= memoryLimit {
            memory = .allocate(capacity: count)
            memory!.initialize(repeating: 0, count: count)
            file = -1
        } else {
            memory = nil
            var template = Array((directory + "/panorama-canvas-XXXXXX").utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else {
                throw CanvasStoreError(description: "cannot create a temporary file in \(directory): \(String(cString: strerror(errno)))")
            }
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            guard ftruncate(fd, off_t(count * MemoryLayout<Float>.size)) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw CanvasStoreError(description: "cannot reserve \(count * 4 >> 20) MiB in \(directory): \(reason)")
            }
            file = fd
            Self.account(count * MemoryLayout<Float>.size)
        }
    }

    /// A store holding `tensor` ([1, C, H, W]).
    public convenience init(_ tensor: Tensor, memoryLimit: Int = .max) throws {
        precondition(tensor.rank == 4 && tensor.shape[0] == 1, "CanvasStore: expected [1, C, H, W], got \(tensor.shape)")
        try self.init(channels: tensor.shape[1], height: tensor.shape[2], width: tensor.shape[3],
                      memoryLimit: memoryLimit)
        try write(tensor, row: 0, column: 0)
    }

    deinit {
        if let memory {
            memory.deallocate()
        } else {
            close(file)
            Self.account(-channels * height * width * MemoryLayout<Float>.size)
        }
    }

    /// Rows `rows` and columns `columns` as [1, C, rows, columns]. With `wrap`, columns outside
    /// 0..<width wrap around (a cylinder, for 360° images); otherwise they must lie inside.
    public func read(rows: Range<Int>, columns: Range<Int>, wrap: Bool = false) throws -> Tensor {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= height, "CanvasStore.read: rows \(rows) of \(height)")
        precondition(wrap || (columns.lowerBound >= 0 && columns.upperBound <= width),
                     "CanvasStore.read: columns \(columns) of \(width)")
        let (h, w, c) = (rows.count, columns.count, channels)
        // Runs of columns that are contiguous in storage.
        var runs: [(source: Int, destination: Int, count: Int)] = []
        var x = columns.lowerBound
        while x < columns.upperBound {
            let source = ((x % width) + width) % width
            let n = min(columns.upperBound - x, width - source)
            runs.append((source, x - columns.lowerBound, n))
            x += n
        }
        var row = [Float](repeating: 0, count: w * c)
        var out = Tensor(zeros: [1, c, h, w])
        try out.withUnsafeMutableBufferPointer { op in
            for y in 0..<h {
                for run in runs {
                    try row.withUnsafeMutableBufferPointer { rp in
                        try load(rp.baseAddress! + run.destination * c, row: rows.lowerBound + y,
                                 column: run.source, count: run.count)
                    }
                }
                row.withUnsafeBufferPointer { rp in
                    let src = rp.baseAddress!, dst = op.baseAddress! + y * w
                    for ch in 0..<c {
                        let plane = dst + ch * h * w
                        for i in 0..<w { plane[i] = src[i * c + ch] }
                    }
                }
            }
        }
        return out
    }

    /// The whole map as [1, C, H, W].
    public func tensor() throws -> Tensor { try read(rows: 0..<height, columns: 0..<width) }

    /// Writes `tensor` ([1, C, h, w]) with its top-left corner at (`row`, `column`).
    public func write(_ tensor: Tensor, row: Int, column: Int) throws {
        let (h, w, c) = (tensor.shape[2], tensor.shape[3], channels)
        precondition(tensor.shape[0] == 1 && tensor.shape[1] == c, "CanvasStore.write: \(tensor.shape) into \(c) channels")
        precondition(row >= 0 && column >= 0 && row + h <= height && column + w <= width,
                     "CanvasStore.write: \(h)x\(w) at (\(row), \(column)) outside \(height)x\(width)")
        var line = [Float](repeating: 0, count: w * c)
        try tensor.withUnsafeBufferPointer { tp in
            for y in 0..<h {
                try line.withUnsafeMutableBufferPointer { lp in
                    let dst = lp.baseAddress!, src = tp.baseAddress! + y * w
                    for ch in 0..<c {
                        let plane = src + ch * h * w
                        for i in 0..<w { dst[i * c + ch] = plane[i] }
                    }
                    try store(UnsafePointer(dst), row: row + y, column: column, count: w)
                }
            }
        }
    }

    private func offset(row: Int, column: Int) -> Int { (row * width + column) * channels }

    private func load(_ destination: UnsafeMutablePointer<Float>, row: Int, column: Int, count: Int) throws {
        let n = count * channels
        if let memory {
            destination.update(from: memory + offset(row: row, column: column), count: n)
            return
        }
        try transfer(UnsafeMutableRawPointer(destination), bytes: n * 4, at: offset(row: row, column: column) * 4) {
            pread(file, $0, $1, off_t($2))
        }
    }

    private func store(_ source: UnsafePointer<Float>, row: Int, column: Int, count: Int) throws {
        let n = count * channels
        if let memory {
            (memory + offset(row: row, column: column)).update(from: source, count: n)
            return
        }
        try transfer(UnsafeMutableRawPointer(mutating: source), bytes: n * 4, at: offset(row: row, column: column) * 4) {
            pwrite(file, $0, $1, off_t($2))
        }
    }

    /// Repeats a pread/pwrite until all bytes moved (they may move fewer).
    private func transfer(_ pointer: UnsafeMutableRawPointer, bytes: Int, at position: Int,
                          _ op: (UnsafeMutableRawPointer, Int, Int) -> Int) throws {
        var done = 0
        while done < bytes {
            let n = op(pointer + done, bytes - done, position + done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw CanvasStoreError(description: "temporary canvas file: \(n < 0 ? String(cString: strerror(errno)) : "unexpected end")")
            }
            done += n
        }
    }
}
