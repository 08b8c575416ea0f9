import CKernels
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
/// File-backed maps can be kept as bfloat16 (`FileFormat.bfloat16`), which halves the disk they
/// take at the cost of rounding every value to 8 significant bits.
public final class CanvasStore: @unchecked Sendable {
    /// How a file-backed map stores its values (maps in memory are always float32).
    public enum FileFormat: String, Sendable, CaseIterable {
        case float32, bfloat16

        /// Bytes per stored value.
        public var size: Int { self == .float32 ? 4 : 2 }
    }

    public let channels: Int, height: Int, width: Int
    /// Whether the values live in a temporary file rather than memory.
    public var isFileBacked: Bool { memory == nil }
    /// How the values are stored: float32 in memory, `FileFormat` in a file.
    public let format: FileFormat

    private let memory: UnsafeMutablePointer<Float>?
    private let file: Int32
    /// Stored values per pixel: `channels`, or more for an overlay on a wider map.
    private let pixelStride: Int
    /// The store whose memory or file an overlay uses, kept alive by it; nil for a store of its own.
    private let base: CanvasStore?
    /// Called when a store of its own is released (a named file's owner decides whether to keep it).
    public var onRelease: (() -> Void)?

    private static let accounting = NSLock()
    nonisolated(unsafe) private static var fileBytes = 0, peakBytes = 0

    /// The most bytes that file-backed stores held at once in this process (temporary disk).
    public static var peakFileBytes: Int { accounting.withLock { peakBytes } }

    /// Starts `peakFileBytes` over from the bytes held now.
    public static func resetPeakFileBytes() { accounting.withLock { peakBytes = fileBytes } }

    /// Counts `bytes` of files that outlive their stores (a journal keeps them to resume from)
    /// in `peakFileBytes` (negative when they go).
    public static func accountKeptFile(_ bytes: Int) { account(bytes) }

    private static func account(_ bytes: Int) {
        accounting.withLock {
            fileBytes += bytes
            peakBytes = max(peakBytes, fileBytes)
        }
    }

    /// A zero-filled map, in memory when it takes at most `memoryLimit` bytes as float32,
    /// otherwise in a temporary file under `directory` holding values as `fileFormat`.
    public init(channels: Int, height: Int, width: Int, memoryLimit: Int = .max,
                directory: String = NSTemporaryDirectory(), fileFormat: FileFormat = .float32) throws {
        precondition(channels > 0 && height > 0 && width > 0, "CanvasStore: empty map")
        self.channels = channels
        self.height = height
        self.width = width
        self.pixelStride = channels
        self.base = nil
        let count = channels * height * width
        if count * MemoryLayout<Float>.size <= memoryLimit {
            memory = try Self.allocateZeroed(count)
            file = -1
            format = .float32
        } else {
            memory = nil
            format = fileFormat
            let bytes = count * fileFormat.size
            var template = Array((directory + "/panorama-canvas-XXXXXX").utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else {
                throw CanvasStoreError(description: "cannot create a temporary file in \(directory): \(String(cString: strerror(errno)))")
            }
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            guard ftruncate(fd, off_t(bytes)) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw CanvasStoreError(description: "cannot reserve \(bytes >> 20) MiB in \(directory): \(reason)")
            }
            file = fd
            Self.account(bytes)
        }
    }

    /// A file-backed map in the named file `path`, which outlives the store (a tiled pass's journal
    /// keeps it to resume from; `onRelease` may remove it). `create`: a new zero-filled file
    /// (replacing one at `path`); else an existing one, which must hold exactly this map.
    public init(channels: Int, height: Int, width: Int, path: String, fileFormat: FileFormat, create: Bool) throws {
        precondition(channels > 0 && height > 0 && width > 0, "CanvasStore: empty map")
        (self.channels, self.height, self.width, self.pixelStride, self.base) = (channels, height, width, channels, nil)
        memory = nil
        format = fileFormat
        let bytes = channels * height * width * fileFormat.size
        let fd = open(path, create ? O_RDWR | O_CREAT | O_TRUNC : O_RDWR, 0o600)
        guard fd >= 0 else {
            throw CanvasStoreError(description: "cannot \(create ? "create" : "open") \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        if create {
            guard ftruncate(fd, off_t(bytes)) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw CanvasStoreError(description: "cannot reserve \(bytes >> 20) MiB in \(path): \(reason)")
            }
        } else {
            guard fstat(fd, &info) == 0, (info.st_mode & mode_t(S_IFMT)) == mode_t(S_IFREG), Int(info.st_size) == bytes else {
                close(fd)
                throw CanvasStoreError(description: "\(path) does not hold a \(channels)x\(height)x\(width) map of \(fileFormat.rawValue) values")
            }
        }
        file = fd
        Self.account(bytes)
    }

    /// `count` zeroed floats straight from the kernel, in transparent huge pages where the system
    /// allows them: a full-size map of a tiled pass is gigabytes, and faulting it in 4 KiB pages
    /// (each zeroed on first touch) costs about as much as a layer's arithmetic.
    private static func allocateZeroed(_ count: Int) throws -> UnsafeMutablePointer<Float> {
        let bytes = count * MemoryLayout<Float>.size
        guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != MAP_FAILED else {
            throw CanvasStoreError(description: "cannot allocate \(bytes >> 20) MiB for a feature map: \(String(cString: strerror(errno)))")
        }
        #if os(Linux)
        _ = madvise(raw, bytes, MADV_HUGEPAGE)
        #endif
        return raw.assumingMemoryBound(to: Float.self)
    }

    private init(overlaying base: CanvasStore, channels: Int) {
        self.channels = channels
        self.height = base.height
        self.width = base.width
        self.pixelStride = base.pixelStride
        self.base = base
        self.memory = base.memory
        self.file = base.file
        self.format = base.format
    }

    /// A store holding `tensor` ([1, C, H, W]).
    public convenience init(_ tensor: Tensor, memoryLimit: Int = .max, fileFormat: FileFormat = .float32) throws {
        precondition(tensor.rank == 4 && tensor.shape[0] == 1, "CanvasStore: expected [1, C, H, W], got \(tensor.shape)")
        try self.init(channels: tensor.shape[1], height: tensor.shape[2], width: tensor.shape[3],
                      memoryLimit: memoryLimit, fileFormat: fileFormat)
        try write(tensor, row: 0, column: 0)
    }

    /// A map of `channels` (at most this map's) kept in this map's storage, so it needs no memory
    /// or disk of its own. Writing a pixel of the overlay destroys that pixel of this map: made
    /// for layers whose output at a pixel depends on their input only at that pixel (residual
    /// additions), which can then write over an input they no longer need.
    public func overlay(channels: Int) -> CanvasStore {
        precondition(channels > 0 && channels <= self.channels, "CanvasStore.overlay: \(channels) of \(self.channels) channels")
        return CanvasStore(overlaying: self, channels: channels)
    }

    deinit {
        guard base == nil else { return }
        if let memory {
            munmap(memory, pixelStride * height * width * MemoryLayout<Float>.size)
        } else {
            close(file)
            Self.account(-pixelStride * height * width * format.size)
        }
        onRelease?()
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
        var out = Tensor(zeros: [1, c, h, w])
        try out.withUnsafeMutableBufferPointer { op in
            let base = op.baseAddress!
            try forEachRow(h, pixels: w) { y, staging in
                let dst = base + y * w
                for run in runs {
                    try load(row: rows.lowerBound + y, column: run.source, count: run.count, staging,
                             into: dst + run.destination, planeStride: h * w)
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
        try tensor.withUnsafeBufferPointer { tp in
            let base = tp.baseAddress!
            try forEachRow(h, pixels: w) { y, staging in
                let src = base + y * w
                try store(row: row + y, column: column, count: w, staging, from: src, planeStride: h * w)
            }
        }
    }

    /// `body(y, staging)` for every y in 0..<rows, the rows spread over the workers (the
    /// transposition between pixel-major storage and [C, H, W] tensors is a large share of a
    /// tiled pass), each worker with its own staging buffer. Rethrows the first error.
    private func forEachRow(_ rows: Int, pixels: Int,
                            _ body: (Int, UnsafeMutableRawPointer?) throws -> Void) throws {
        let workers = min(Compute.threads, max(1, rows * pixels * channels / (1 << 16)), rows)
        let failure = FirstError()
        Compute.parallelFor(workers) { worker in
            let staging = stagingBuffer(pixels: pixels)
            defer { staging?.deallocate() }
            for y in stride(from: worker, to: rows, by: workers) {
                do { try body(y, staging) } catch { failure.record(error); return }
            }
        }
        if let error = failure.error { throw error }
    }

    private func offset(row: Int, column: Int) -> Int { (row * width + column) * pixelStride }

    /// Room for one file row run of `pixels` pixels, reused for every row of a read or write
    /// (nil for maps in memory, which need none).
    private func stagingBuffer(pixels: Int) -> UnsafeMutableRawPointer? {
        memory == nil ? .allocate(byteCount: pixels * pixelStride * format.size, alignment: 64) : nil
    }

    /// Copies `count` pixels of a row into `dst`, channel `ch` of pixel `i` at
    /// `dst[ch · planeStride + i]`: a transposition of the pixel-major run (in 16x16 blocks for
    /// float32 values, the share of a tiled pass that these copies are is large).
    private func load(row: Int, column: Int, count: Int, _ staging: UnsafeMutableRawPointer?,
                      into dst: UnsafeMutablePointer<Float>, planeStride: Int) throws {
        let (c, stride) = (channels, pixelStride)
        if let memory {
            pk_transpose(memory + offset(row: row, column: column), stride, dst, planeStride, count, c)
            return
        }
        let n = count * stride, raw = staging!
        try transfer(raw, bytes: n * format.size, at: offset(row: row, column: column) * format.size) {
            pread(file, $0, $1, off_t($2))
        }
        switch format {
        case .float32:
            pk_transpose(raw.assumingMemoryBound(to: Float.self), stride, dst, planeStride, count, c)
        case .bfloat16:
            let src = raw.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count {
                for ch in 0..<c { dst[ch * planeStride + i] = Float(bitPattern: UInt32(src[i * stride + ch]) << 16) }
            }
        }
    }

    /// Stores `count` pixels of a row, channel `ch` of pixel `i` being `src[ch · planeStride + i]`.
    /// In an overlay stored in a file, the base map's other channels of those pixels are
    /// overwritten too (with zeros).
    private func store(row: Int, column: Int, count: Int, _ staging: UnsafeMutableRawPointer?,
                       from src: UnsafePointer<Float>, planeStride: Int) throws {
        let (c, stride) = (channels, pixelStride)
        if let memory {
            pk_transpose(src, planeStride, memory + offset(row: row, column: column), stride, c, count)
            return
        }
        let n = count * stride, raw = staging!
        if stride != c { raw.initializeMemory(as: UInt8.self, repeating: 0, count: n * format.size) }
        switch format {
        case .float32:
            pk_transpose(src, planeStride, raw.assumingMemoryBound(to: Float.self), stride, c, count)
        case .bfloat16:
            let dst = raw.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { for ch in 0..<c { dst[i * stride + ch] = bfloat16(src[ch * planeStride + i]) } }
        }
        try transfer(raw, bytes: n * format.size, at: offset(row: row, column: column) * format.size) {
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

/// The first error thrown by any of several workers.
private final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var first: Error?

    var error: Error? { lock.withLock { first } }

    func record(_ error: Error) { lock.withLock { if first == nil { first = error } } }
}

/// `value` rounded to the nearest bfloat16 (ties to even), as its bit pattern.
@inline(__always)
func bfloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 }
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
}
