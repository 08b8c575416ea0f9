import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Tensors

// The enum's own `write` shadows the C function inside it.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

/// What one named entry of a safetensors file holds.
public enum SafeTensorsPayload: Sendable {
    /// Float values stored in the given format (rounded to nearest even for F16/BF16).
    case float(Tensor, StorageType)
    /// Integer values stored as I64 (e.g. token ids); `values.count` must equal the shape's product.
    case int64(shape: [Int], values: [Int])
    /// Integer values stored as I32.
    case int32(shape: [Int], values: [Int32])

    var dtype: DType {
        switch self {
        case let .float(_, storage): return storage.dtype
        case .int64: return .i64
        case .int32: return .i32
        }
    }

    var shape: [Int] {
        switch self {
        case let .float(t, _): return t.shape
        case let .int64(shape, _), let .int32(shape, _): return shape
        }
    }

    var count: Int {
        switch self {
        case let .float(t, _): return t.count
        case let .int64(_, values): return values.count
        case let .int32(_, values): return values.count
        }
    }
}

/// Writes safetensors files that the reference implementation (and `SafeTensorsFile`) reads.
public enum SafeTensorsWriter {
    /// Writes float tensors, all in one storage format. See `write(_:metadata:to:)`.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], dtype: StorageType,
                             metadata: [String: String] = [:], to url: URL) throws {
        try write(tensors.map { (name: $0.name, payload: SafeTensorsPayload.float($0.tensor, dtype)) },
                  metadata: metadata, to: url)
    }

    /// Writes entries of mixed kinds. Header keys keep the given order; the data region is laid out
    /// largest element first (as the reference does) so every tensor stays aligned to its element size.
    /// The file is written to a temporary name in the same directory and renamed into place, so a
    /// failure never leaves a half-written file at `url`.
    public static func write(_ entries: [(name: String, payload: SafeTensorsPayload)],
                             metadata: [String: String] = [:], to url: URL) throws {
        let path = url.path
        var seen = Set<String>()
        for (name, payload) in entries {
            guard !name.isEmpty, name != "__metadata__" else {
                throw WeightsError.writeFailed(path: path, reason: "invalid tensor name \"\(name)\"")
            }
            guard seen.insert(name).inserted else {
                throw WeightsError.writeFailed(path: path, reason: "tensor \"\(name)\" is given twice")
            }
            guard payload.shape.allSatisfy({ $0 >= 0 }), payload.shape.reduce(1, *) == payload.count else {
                throw WeightsError.writeFailed(path: path, reason: "tensor \"\(name)\" has shape \(payload.shape) "
                    + "but \(payload.count) values")
            }
        }

        // Data order: stable sort by element size, descending.
        let order = entries.indices.sorted {
            let a = entries[$0].payload.dtype.size, b = entries[$1].payload.dtype.size
            return a != b ? a > b : $0 < $1
        }
        var offsets = [Range<Int>](repeating: 0..<0, count: entries.count)
        var position = 0
        for i in order {
            let bytes = entries[i].payload.count * entries[i].payload.dtype.size
            offsets[i] = position..<(position + bytes)
            position += bytes
        }

        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += "\"__metadata__\":{"
            header += metadata.keys.sorted().map { jsonStringLiteral($0) + ":" + jsonStringLiteral(metadata[$0]!) }
                .joined(separator: ",")
            header += "}"
            first = false
        }
        for (i, entry) in entries.enumerated() {
            if !first { header += "," }
            first = false
            header += jsonStringLiteral(entry.name) + ":{\"dtype\":\"\(entry.payload.dtype.rawValue)\",\"shape\":["
                + entry.payload.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":["
                + "\(offsets[i].lowerBound),\(offsets[i].upperBound)]}"
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        // Pad with spaces so the data region starts 8-byte aligned, like the reference writer.
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        let directory = url.deletingLastPathComponent().path
        let temporary = (directory as NSString).appendingPathComponent(
            ".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WeightsError.writeFailed(path: path, reason: String(cString: strerror(errno))) }
        var closed = false
        do {
            defer { if !closed { close(fd) } }
            var lengthField = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &lengthField) { try writeAll(fd, $0, path: path) }
            try headerBytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
            for i in order { try writePayload(entries[i].payload, fd: fd, path: path) }
            closed = true
            guard close(fd) == 0 else {
                throw WeightsError.writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
            guard rename(temporary, path) == 0 else {
                throw WeightsError.writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    private static func writePayload(_ payload: SafeTensorsPayload, fd: Int32, path: String) throws {
        // Converted in chunks so that large tensors do not need a second full-size buffer.
        let chunk = 1 << 16
        switch payload {
        case let .float(tensor, storage):
            try tensor.withUnsafeBufferPointer { values in
                switch storage {
                case .f32:
                    try writeAll(fd, UnsafeRawBufferPointer(values), path: path)
                case .f16, .bf16:
                    var buffer = [UInt16](repeating: 0, count: min(chunk, values.count))
                    var start = 0
                    while start < values.count {
                        let n = min(chunk, values.count - start)
                        for i in 0..<n {
                            buffer[i] = storage == .f16 ? HalfPrecision.halfBits(from: values[start + i])
                                : HalfPrecision.bfloat16Bits(from: values[start + i])
                        }
                        try buffer.withUnsafeBytes { try writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[0..<(2 * n)]), path: path) }
                        start += n
                    }
                }
            }
        case let .int64(_, values):
            let converted = values.map { Int64($0).littleEndian }
            try converted.withUnsafeBytes { try writeAll(fd, $0, path: path) }
        case let .int32(_, values):
            let converted = values.map { $0.littleEndian }
            try converted.withUnsafeBytes { try writeAll(fd, $0, path: path) }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = posixWrite(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw WeightsError.writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
            offset += written
        }
    }
}
