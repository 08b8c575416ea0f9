import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Tensors

/// `open(2)` read-only; a free function because `SafeTensorsFile.open(_:)` shadows the C name inside the class.
private func openReadOnly(_ path: String) -> Int32 { open(path, O_RDONLY | O_CLOEXEC) }

/// A file of named tensors, memory-mapped read-only and validated when opened: a safetensors file,
/// or (through `open(_:)`) a PyTorch `torch.save` file read by the restricted unpickler.
///
/// Safetensors layout: an 8-byte little-endian header length N, N bytes of JSON header, then the
/// data region. Every entry of the header is checked on `init`, so `tensor(_:)` cannot read outside
/// the file. Values are assumed little-endian, as the format specifies and as every supported host is.
///
/// Immutable after `init` (the mapping is read-only), hence safe to share between threads. The file
/// must not be truncated while open: like any mapping, reading pages that vanished would crash.
public final class SafeTensorsFile: @unchecked Sendable {
    /// Largest header accepted; the reference implementation uses the same bound against hostile files.
    public static let maxHeaderBytes = 100_000_000

    /// How the tensors are stored on disk.
    public enum Format: String, Sendable {
        /// A `.safetensors` file.
        case safetensors
        /// A PyTorch `torch.save` zip archive (`.ckpt`, `.pt`, `.pth`, `.bin`), read without running code.
        case pytorch
    }

    public let url: URL
    public let format: Format
    /// Tensor names, sorted. A PyTorch file's nested dicts give dotted names (`state_dict.a.b`).
    public let names: [String]
    /// The header's optional `__metadata__` string map; for a PyTorch file, its scalar values
    /// (strings, numbers, bools) under their dotted names, e.g. `global_step`.
    public let metadata: [String: String]

    private let entries: [String: TensorInfo]
    /// Element strides of the tensors that are not contiguous in the file (PyTorch files only);
    /// their elements are gathered when read.
    private let strides: [String: [Int]]
    private let base: UnsafeRawPointer
    private let mappedSize: Int

    /// Size of the whole file in bytes.
    public var fileSize: Int { mappedSize }

    /// Maps and validates the safetensors file at `url`; throws `WeightsError` naming the file and
    /// the bad entry. Use `open(_:)` to accept PyTorch files too.
    public convenience init(url: URL) throws {
        let (base, size) = try Self.map(url)
        do {
            let parsed = try Self.parseHeader(base: base, size: size, path: url.path)
            self.init(url: url, format: .safetensors, base: base, size: size, entries: parsed.entries,
                      strides: [:], metadata: parsed.metadata)
        } catch {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
            throw error
        }
    }

    /// Opens a file of tensors in either format, told apart by content (not by extension): a
    /// safetensors file, or a PyTorch `torch.save` zip archive (`.ckpt`, `.pt`, `.pth`, `.bin`),
    /// whose pickle is read by a restricted unpickler that only builds tensors, dicts and plain
    /// values and refuses every other global by name — nothing in the file is ever run.
    /// Contiguous tensors are read in place from the mapping like safetensors data; others are
    /// gathered when read. Nested dicts, lists and tuples give dotted names (`state_dict.a.b`,
    /// `layers.0`; a bare saved tensor gets the empty name), scalars become `metadata`. The
    /// pre-1.6 (non-zip) PyTorch format is refused with a message.
    public static func open(_ url: URL) throws -> SafeTensorsFile {
        let (base, size) = try map(url)
        let bytes = UnsafeRawBufferPointer(start: base, count: size)
        do {
            if ZipArchive.looksLikeZip(bytes) {
                let contents = try PyTorchFile.parse(bytes, path: url.path)
                return SafeTensorsFile(url: url, format: .pytorch, base: base, size: size, entries: contents.entries,
                                       strides: contents.strides, metadata: contents.metadata)
            }
            // A safetensors header length can begin with the same bytes as a pickle (0x80 0x02 is
            // a 640-byte header); a safetensors file has its JSON's "{" right after the length.
            let safetensors = size > 8 && bytes[8] == UInt8(ascii: "{")
            if !safetensors, bytes[0] == 0x80, (2...5).contains(bytes[1]) {
                let legacy = bytes.starts(with: PyTorchFile.legacyMagic)
                throw WeightsError.corruptFile(path: url.path, problem: legacy
                    ? "is a PyTorch file in the legacy format of PyTorch before 1.6, which is not read; load it "
                        + "with PyTorch and save it again (torch.save writes the zip format since 1.6), or convert "
                        + "it to safetensors"
                    : "is a bare pickle, not a PyTorch zip archive or a safetensors file; only torch.save's zip "
                        + "format is read")
            }
            let parsed = try parseHeader(base: base, size: size, path: url.path)
            return SafeTensorsFile(url: url, format: .safetensors, base: base, size: size, entries: parsed.entries,
                                   strides: [:], metadata: parsed.metadata)
        } catch {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
            throw error
        }
    }

    /// Takes ownership of the mapping `base` (unmapped on deinit).
    private init(url: URL, format: Format, base: UnsafeRawPointer, size: Int, entries: [String: TensorInfo],
                 strides: [String: [Int]], metadata: [String: String]) {
        self.url = url
        self.format = format
        self.base = base
        self.mappedSize = size
        self.entries = entries
        self.strides = strides
        self.metadata = metadata
        self.names = entries.keys.sorted()
    }

    /// Maps the regular file at `url` read-only.
    private static func map(_ url: URL) throws -> (UnsafeRawPointer, Int) {
        let path = url.path
        let fd = openReadOnly(path)
        guard fd >= 0 else { throw WeightsError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw WeightsError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw WeightsError.unreadable(path: path, reason: "not a regular file")
        }
        let size = Int(st.st_size)
        guard size >= 8 else {
            throw WeightsError.corruptFile(path: path, problem: "the file is \(size) bytes long, too short "
                + "for a weight file (a safetensors file has at least 8 bytes); it is truncated or not a weight file")
        }
        // The mapping outlives the descriptor: closing fd does not unmap.
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw WeightsError.unreadable(path: path, reason: "mmap failed: " + String(cString: strerror(errno)))
        }
        return (UnsafeRawPointer(mapped), size)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedSize)
    }

    /// Where and how `name` is stored, or nil if the file has no such tensor.
    public func info(_ name: String) -> TensorInfo? { entries[name] }

    /// Whether the file holds a tensor named `name`.
    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// The tensor `name` converted to float32 (from any supported dtype; BOOL becomes 0/1).
    public func tensor(_ name: String) throws -> Tensor {
        let info = try require(name)
        let n = info.count
        return withContiguousBytes(info) { src in
            Tensor(uninitializedShape: info.shape) { out in
                Self.convert(src, dtype: info.dtype, count: n, into: out)
            }
        }
    }

    /// The integer tensor `name` (I64, I32, I16, I8, U8 or BOOL) as Swift `Int`s, e.g. token ids.
    public func integers(_ name: String) throws -> [Int] {
        let info = try require(name)
        let n = info.count
        guard !info.dtype.isFloatingPoint else {
            throw WeightsError.wrongDType(path: url.path, tensor: name, dtype: info.dtype.rawValue,
                                          expected: "an integer type (I64 or I32)")
        }
        return withContiguousBytes(info) { p in
            func load<T: FixedWidthInteger>(_: T.Type) -> [Int] {
                (0..<n).map { Int(T(littleEndian: p.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))) }
            }
            switch info.dtype {
            case .i64: return load(Int64.self)
            case .i32: return load(Int32.self)
            case .i16: return load(Int16.self)
            case .i8: return load(Int8.self)
            case .u8, .bool, .f64, .f32, .f16, .bf16: return load(UInt8.self)
            }
        }
    }

    /// Calls `body` with the raw stored bytes of `name` (valid only during the call), for callers that
    /// convert or copy without an intermediate float32 array.
    /// A non-contiguous tensor of a PyTorch file is passed as a contiguous copy.
    public func withRawBytes<R>(of name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let info = try require(name)
        return try withContiguousBytes(info) { try body(UnsafeRawBufferPointer(start: $0, count: info.count * info.dtype.size)) }
    }

    /// Calls `body` with the tensor's elements in row-major order: in place in the mapping, or
    /// gathered into a temporary buffer for a non-contiguous tensor (its strides were checked
    /// against its storage when the file was opened).
    private func withContiguousBytes<R>(_ info: TensorInfo, _ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
        let src = base + info.byteRange.lowerBound
        guard let strides = strides[info.name] else { return try body(src) }
        let size = info.dtype.size
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, info.count * size), alignment: 16)
        defer { buffer.deallocate() }
        var written = 0
        func gather(_ dim: Int, _ offset: Int) {
            if dim == info.shape.count {
                (buffer + written).copyMemory(from: src + offset * size, byteCount: size)
                written += size
                return
            }
            for i in 0..<info.shape[dim] { gather(dim + 1, offset + i * strides[dim]) }
        }
        if info.count > 0 { gather(0, 0) }
        return try body(UnsafeRawPointer(buffer))
    }

    private func require(_ name: String) throws -> TensorInfo {
        guard let info = entries[name] else {
            throw WeightsError.missingTensor(set: url.lastPathComponent, tensor: name, files: [url.path], hint: nil)
        }
        return info
    }

    // MARK: - Conversion

    /// Converts `count` stored elements at `src` to float32. Tight loops over unaligned loads,
    /// since data offsets need not be aligned to the element size.
    static func convert(_ src: UnsafeRawPointer, dtype: DType, count n: Int, into out: UnsafeMutableBufferPointer<Float>) {
        guard n > 0, let dst = out.baseAddress else { return }
        // Large tensors are converted in chunks on every worker: loading SD 1.5 means 1.07 G
        // half-precision values, and the page faults of the mapping and of the fresh output are
        // spread over the cores too.
        let chunk = 1 << 20
        if n > 2 * chunk && Compute.threads > 1 {
            let size = dtype.size
            Compute.parallelFor((n + chunk - 1) / chunk) { c in
                let start = c * chunk, count = min(chunk, n - start)
                convert(src + start * size, dtype: dtype, count: count,
                        into: UnsafeMutableBufferPointer(start: dst + start, count: count))
            }
            return
        }
        switch dtype {
        case .f32:
            // Same representation on little-endian hosts: one copy.
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
        case .f16:
            for i in 0..<n {
                dst[i] = HalfPrecision.float(fromHalfBits: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .bf16:
            for i in 0..<n {
                dst[i] = HalfPrecision.float(fromBFloat16Bits: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .f64:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        case .i64:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        case .i32:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        case .i16:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
        case .i8:
            for i in 0..<n { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
        case .u8:
            for i in 0..<n { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
        case .bool:
            for i in 0..<n { dst[i] = src.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0 }
        }
    }

    // MARK: - Header validation

    private static func parseHeader(base: UnsafeRawPointer, size: Int, path: String) throws
        -> (entries: [String: TensorInfo], metadata: [String: String])
    {
        let headerLength = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        let available = size - 8
        guard headerLength <= UInt64(maxHeaderBytes) else {
            throw WeightsError.corruptFile(path: path, problem: "the header length field says \(headerLength) "
                + "bytes, more than the 100 MB limit; the file is corrupt or not a safetensors file")
        }
        guard headerLength <= UInt64(available) else {
            throw WeightsError.corruptFile(path: path, problem: "the header length field says \(headerLength) "
                + "bytes but only \(available) bytes follow it; the file is truncated or not a safetensors file")
        }
        let n = Int(headerLength)
        let headerBytes = UnsafeRawBufferPointer(start: base + 8, count: n)
        guard isValidUTF8(headerBytes) else {
            throw WeightsError.corruptFile(path: path, problem: "the header is not valid UTF-8; the file is "
                + "corrupt or not a safetensors file")
        }
        let json: JSON
        do {
            json = try JSON.parse(headerBytes)
        } catch let e as JSON.ParseError {
            throw WeightsError.corruptFile(path: path, problem: "the header is not valid JSON (\(e)); the "
                + "file is corrupt or not a safetensors file")
        }
        guard case let .object(members) = json else {
            throw WeightsError.corruptFile(path: path, problem: "the header is \(json.kind), not a JSON object; "
                + "the file is corrupt or not a safetensors file")
        }

        let dataStart = 8 + n
        let dataSize = size - dataStart
        var entries: [String: TensorInfo] = [:]
        entries.reserveCapacity(members.count)
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                metadata = try parseMetadata(value, path: path)
                continue
            }
            func bad(_ problem: String) -> WeightsError {
                WeightsError.corruptTensor(path: path, tensor: name, problem: problem)
            }
            guard entries[name] == nil else { throw bad("appears twice in the header; the file is corrupt") }
            guard case .object = value else {
                throw bad("has \(value.kind) as its header entry instead of an object with dtype, shape and data_offsets")
            }
            guard case let .string(dtypeName)? = value["dtype"] else {
                throw bad("has no dtype string in its header entry (found \(value["dtype"]?.brief ?? "nothing"))")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw bad("has dtype \"\(dtypeName)\", which is not supported (supported: "
                    + DType.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            guard case let .array(shapeItems)? = value["shape"] else {
                throw bad("has no shape list in its header entry (found \(value["shape"]?.brief ?? "nothing"))")
            }
            var shape: [Int] = []
            var elements = 1
            for item in shapeItems {
                guard case let .int(d) = item, d >= 0 else {
                    throw bad("has shape \(value["shape"]!.brief), which is not a list of non-negative integers; "
                        + "the file is corrupt")
                }
                shape.append(d)
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else { throw bad("has shape \(shape) whose size overflows; the file is corrupt") }
                elements = product
            }
            guard case let .array(offsetItems)? = value["data_offsets"], offsetItems.count == 2,
                  case let .int(begin) = offsetItems[0], case let .int(end) = offsetItems[1] else {
                throw bad("has data_offsets \(value["data_offsets"]?.brief ?? "missing"); expected two integers "
                    + "[begin, end]; the file is corrupt")
            }
            guard begin >= 0, begin <= end else {
                throw bad("has data_offsets [\(begin), \(end)], which is not a valid range; the file is corrupt")
            }
            guard end <= dataSize else {
                throw bad("has data_offsets [\(begin), \(end)] past the end of the data (\(dataSize) bytes); "
                    + "the file is truncated or corrupt")
            }
            let (expectedBytes, overflow) = elements.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, end - begin == expectedBytes else {
                throw bad("has \(end - begin) bytes of data but dtype \(dtype.rawValue) with shape \(shape) needs "
                    + "\(overflow ? "more than can be addressed" : String(expectedBytes)); the file is corrupt")
            }
            entries[name] = TensorInfo(name: name, dtype: dtype, shape: shape,
                                       byteRange: (dataStart + begin)..<(dataStart + end))
        }
        // The format (as its reference reader enforces) indexes the data buffer entirely: sorted by
        // offset, each tensor starts where the one before ends, and the last ends at the file's end.
        // Overlapping tensors would alias each other's bytes.
        var expected = dataStart
        for info in entries.values.sorted(by: { ($0.byteRange.lowerBound, $0.byteRange.upperBound) < ($1.byteRange.lowerBound, $1.byteRange.upperBound) }) {
            let (begin, end) = (info.byteRange.lowerBound - dataStart, info.byteRange.upperBound - dataStart)
            guard info.byteRange.lowerBound == expected else {
                let problem = info.byteRange.lowerBound < expected
                    ? "has data_offsets [\(begin), \(end)], which overlap another tensor's bytes; the file is corrupt"
                    : "has data_offsets [\(begin), \(end)], which leave bytes \(expected - dataStart)..<\(begin) of the data unused; the file is corrupt"
                throw WeightsError.corruptTensor(path: path, tensor: info.name, problem: problem)
            }
            expected = info.byteRange.upperBound
        }
        guard expected == size else {
            throw WeightsError.corruptFile(path: path, problem: "the tensors' data ends at byte \(expected - dataStart) of the \(dataSize) "
                + "bytes after the header; the file has trailing bytes or is corrupt")
        }
        return (entries, metadata)
    }

    private static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    private static func parseMetadata(_ value: JSON, path: String) throws -> [String: String] {
        guard case let .object(members) = value else {
            throw WeightsError.corruptFile(path: path, problem: "the header's __metadata__ is \(value.kind), "
                + "not a map of strings; the file is corrupt")
        }
        var result: [String: String] = [:]
        for (key, item) in members {
            guard case let .string(s) = item else {
                throw WeightsError.corruptFile(path: path, problem: "the header's __metadata__ entry \"\(key)\" "
                    + "is \(item.kind), not a string; the file is corrupt")
            }
            result[key] = s
        }
        return result
    }
}
