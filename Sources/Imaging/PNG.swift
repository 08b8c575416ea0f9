import CImaging
import Foundation

/// Errors reading or writing images; messages name the file.
public enum ImagingError: Error, CustomStringConvertible, Equatable {
    case read(path: String, reason: String)
    case write(path: String, reason: String)

    public var description: String {
        switch self {
        case .read(let path, let reason): return "\(path): cannot read the image: \(reason)"
        case .write(let path, let reason): return "\(path): cannot write the image: \(reason)"
        }
    }
}

/// PNG files through libpng.
public enum PNG {
    /// Writes `image` with `text` chunks (e.g. "parameters" for the generation settings): tEXt for
    /// ASCII text, iTXt (UTF-8) for any other, as Pillow (and so A1111) writes them.
    /// The file is written under a temporary name beside `url` and renamed into place, so a
    /// failure never leaves a partial file at `url`.
    public static func write(_ image: RGBImage, to url: URL, text: [(key: String, value: String)] = []) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(getpid()).partial")
        var message = [CChar](repeating: 0, count: 512)
        let keys = text.map { strdup($0.key) }, values = text.map { strdup($0.value) }
        defer { (keys + values).forEach { free($0) } }
        let status = image.pixels.withUnsafeBufferPointer { pixels in
            keys.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
                values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                    pk_png_write(temporary.path, pixels.baseAddress, UInt32(image.width), UInt32(image.height), 3,
                                 k.baseAddress, v.baseAddress, Int32(text.count), &message, message.count)
                }
            }
        }
        guard status == 0 else {
            try? FileManager.default.removeItem(at: temporary)
            throw ImagingError.write(path: url.path, reason: messageText(message))
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ImagingError.write(path: url.path, reason: reason)
        }
    }

    /// Reads any PNG (grey, RGB, palette, with alpha, 1–16 bits) as 8-bit RGB; alpha is dropped.
    public static func read(_ url: URL, maxPixels: Int = 1 << 28) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 512)
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        guard pk_png_read_rgb8(url.path, &pixels, &width, &height, UInt64(maxPixels), &message, message.count) == 0,
              let pixels else {
            throw ImagingError.read(path: url.path, reason: messageText(message))
        }
        defer { free(pixels) }
        let count = Int(width) * Int(height) * 3
        return RGBImage(width: Int(width), height: Int(height),
                        pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
    }

    /// Largest text accepted from one chunk, stored or decompressed (16 MiB: A1111's parameters
    /// and ComfyUI's workflows are kilobytes).
    public static let maxTextBytes = 16 << 20

    /// The text chunks of a PNG file by keyword (a repeated keyword: the last one): tEXt (Latin-1,
    /// or UTF-8 when its bytes are valid UTF-8, as this program wrote them before it wrote iTXt),
    /// zTXt (compressed Latin-1) and iTXt (UTF-8, compressed or not).
    ///
    /// Read without libpng and without decoding the image: chunk headers are walked and only text
    /// chunks are read. Every length is checked against the file, so a truncated or corrupt file
    /// is an error, never a read past the end; text over `maxTextBytes` in a chunk (stored or
    /// decompressed), or over 4 times that in all, is an error too. Chunks that are malformed
    /// inside (no keyword terminator, unknown compression, a corrupt zlib stream, iTXt that is not
    /// UTF-8) are skipped.
    public static func textChunks(of url: URL) throws -> [String: String] {
        let path = url.path
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: url) } catch {
            throw ImagingError.read(path: path, reason: "cannot open for reading (\(error.localizedDescription))")
        }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        return try textChunks(size: size, path: path) { offset, count in
            try handle.seek(toOffset: offset)
            return try handle.read(upToCount: count).map { [UInt8]($0) }
        }
    }

    /// The chunk walk of `textChunks(of:)` over `size` bytes that `read(offset, count)` gives
    /// (fewer than `count` at the end), for files and for bytes in memory alike.
    static func textChunks(size fileSize: UInt64, path: String,
                           read readBytes: (UInt64, Int) throws -> [UInt8]?) throws -> [String: String] {
        func failure(_ reason: String) -> ImagingError { .read(path: path, reason: reason) }
        func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
            guard let bytes = try readBytes(offset, count), bytes.count == count else {
                throw failure("the file ends inside a chunk (truncated)")
            }
            return bytes
        }
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard let head = try readBytes(0, 8), head == signature else {
            throw failure("not a PNG file")
        }
        var offset: UInt64 = 8
        var result: [String: String] = [:]
        var total = 0
        while offset < fileSize {
            guard fileSize - offset >= 12 else { throw failure("the file ends inside a chunk (truncated)") }
            let header = try read(offset, 8)
            let length = header[0..<4].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let type = String(decoding: header[4..<8], as: UTF8.self)
            guard length <= 0x7FFF_FFFF, length + 12 <= fileSize - offset else {
                throw failure("the \(type) chunk at byte \(offset) claims \(length) bytes, past the end of the file (truncated or corrupt)")
            }
            if type == "IEND" { break }
            if type == "tEXt" || type == "zTXt" || type == "iTXt" {
                guard length <= UInt64(maxTextBytes) else {
                    throw failure("the \(type) chunk at byte \(offset) holds \(length) bytes of text, more than the \(maxTextBytes) allowed")
                }
                if let (key, text) = try decodeText(type: type, body: try read(offset + 8, Int(length)), path: path) {
                    total += text.utf8.count
                    guard total <= 4 * maxTextBytes else {
                        throw failure("the text chunks hold more than the \(4 * maxTextBytes) bytes of text allowed in all")
                    }
                    result[key] = text
                }
            }
            offset += 12 + length
        }
        return result
    }

    /// Keyword and text of one text chunk's body; nil for a malformed chunk.
    private static func decodeText(type: String, body: [UInt8], path: String) throws -> (String, String)? {
        guard let zero = body.firstIndex(of: 0), zero >= 1, zero <= 79 else { return nil }
        let key = latin1(body[0..<zero])
        var rest = body[(zero + 1)...]
        switch type {
        case "tEXt":
            return (key, String(validating: rest, as: UTF8.self) ?? latin1(rest))
        case "zTXt":
            guard rest.first == 0 else { return nil }  // method 0 (deflate) is the only one
            guard let bytes = try inflated(rest.dropFirst(), type: type, path: path) else { return nil }
            return (key, latin1(bytes[...]))
        default:  // iTXt: compression flag, method, language tag NUL, translated keyword NUL, text
            guard rest.count >= 2 else { return nil }
            let compressed = rest[rest.startIndex], method = rest[rest.startIndex + 1]
            rest = rest.dropFirst(2)
            guard let languageEnd = rest.firstIndex(of: 0) else { return nil }
            rest = rest[(languageEnd + 1)...]
            guard let translatedEnd = rest.firstIndex(of: 0) else { return nil }
            rest = rest[(translatedEnd + 1)...]
            var bytes = [UInt8](rest)
            switch (compressed, method) {
            case (0, _): break
            case (1, 0):
                guard let out = try inflated(rest, type: type, path: path) else { return nil }
                bytes = out
            default: return nil
            }
            guard let text = String(validating: bytes, as: UTF8.self) else { return nil }
            return (key, text)
        }
    }

    /// The zlib stream `data` inflated; nil when corrupt, an error beyond `maxTextBytes`.
    private static func inflated(_ data: ArraySlice<UInt8>, type: String, path: String) throws -> [UInt8]? {
        // text compresses a few times at most: start small, grow up to the cap
        var capacity = min(maxTextBytes, max(1 << 16, data.count * 16))
        while true {
            var output = [UInt8](repeating: 0, count: capacity)
            var produced = 0
            let status = data.withUnsafeBufferPointer { input in
                output.withUnsafeMutableBufferPointer { out in
                    pk_inflate_bounded(input.baseAddress, input.count, out.baseAddress, out.count, &produced)
                }
            }
            switch status {
            case 0: return Array(output[0..<min(produced, output.count)])
            case 1 where capacity < maxTextBytes: capacity = min(maxTextBytes, capacity * 8)
            case 1: throw ImagingError.read(path: path, reason: "a \(type) chunk decompresses to more than the \(maxTextBytes) bytes of text allowed")
            default: return nil
            }
        }
    }

    private static func latin1(_ bytes: ArraySlice<UInt8>) -> String {
        var text = ""
        text.unicodeScalars.append(contentsOf: bytes.map { Unicode.Scalar($0) })
        return text
    }
}

/// The text of a NUL-terminated message buffer filled by the C side.
func messageText(_ message: [CChar]) -> String {
    let bytes = message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
