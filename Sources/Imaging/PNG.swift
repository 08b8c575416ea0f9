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
    /// Writes `image` with `text` as tEXt chunks (e.g. "parameters" for the generation settings).
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

    /// The tEXt/zTXt/iTXt chunks of a PNG file, read without libpng (for tests and `--help` examples).
    public static func textChunks(of url: URL) throws -> [String: String] {
        let data = try Data(contentsOf: url)
        var result: [String: String] = [:]
        var offset = 8
        while offset + 12 <= data.count {
            let length = data[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: data[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let body = data[(offset + 8)..<min(data.count, offset + 8 + length)]
            if type == "tEXt", let zero = body.firstIndex(of: 0) {
                result[String(decoding: body[body.startIndex..<zero], as: UTF8.self)] =
                    String(decoding: body[(zero + 1)...], as: UTF8.self)
            }
            offset += 12 + length
        }
        return result
    }
}

/// The text of a NUL-terminated message buffer filled by the C side.
private func messageText(_ message: [CChar]) -> String {
    let bytes = message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
