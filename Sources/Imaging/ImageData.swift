import CImaging
import Foundation

extension ImageFile {
    /// Reads a PNG, JPEG or WebP held in memory (e.g. an upload) exactly as `read(_:maxPixels:)`
    /// reads a file, with the same decoders and checks, decoded from memory (no temporary file).
    /// More than `maxBytes` is refused before anything is decoded. Errors are `ImagingError.read`
    /// naming `name`.
    public static func read(data: Data, name: String = "the uploaded image", maxBytes: Int = maxFileBytes,
                            maxPixels: Int = 1 << 28) throws -> RGBImage {
        func failure(_ reason: String) -> ImagingError { .read(path: name, reason: reason) }
        try checkSize(data, name: name, maxBytes: maxBytes)
        let head = [UInt8](data.prefix(12))
        guard !head.isEmpty else { throw failure("the file is empty, not a \(formatList) image") }
        guard let format = format(ofFileStarting: head) else {
            let start = head.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
            throw failure("not a \(formatList) file (whatever its name says; it starts with the bytes \(start))")
        }
        if format == .png { return try PNG.read(data: data, name: name, maxPixels: maxPixels) }
        guard data.count <= maxFileBytes else {
            throw failure("the file holds \(data.count) bytes, more than the \(maxFileBytes) allowed for a \(format.rawValue) image")
        }
        return try data.withUnsafeBytes { try decode($0, format: format, maxPixels: maxPixels, failure: failure) }
    }

    static func checkSize(_ data: Data, name: String, maxBytes: Int) throws {
        guard data.count <= maxBytes else {
            throw ImagingError.read(path: name, reason: "it holds \(data.count) bytes, more than the \(maxBytes) allowed")
        }
    }
}

extension PNG {
    /// Reads a PNG held in memory as `read(_:maxPixels:)` reads a file (the same decoder, limits
    /// and messages). Errors are `ImagingError.read` naming `name`.
    public static func read(data: Data, name: String = "the uploaded image", maxPixels: Int = 1 << 28) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 512)
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        let status = data.withUnsafeBytes { bytes in
            pk_png_read_rgb8_memory(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, &pixels, &width, &height,
                                    UInt64(maxPixels), &message, message.count)
        }
        guard status == 0, let pixels else { throw ImagingError.read(path: name, reason: messageText(message)) }
        defer { free(pixels) }
        return RGBImage(width: Int(width), height: Int(height),
                        pixels: Array(UnsafeBufferPointer(start: pixels, count: Int(width) * Int(height) * 3)))
    }

    /// The text chunks of a PNG held in memory, read as `textChunks(of:)` reads a file.
    public static func textChunks(data: Data, name: String = "the uploaded image",
                                  maxBytes: Int = ImageFile.maxFileBytes) throws -> [String: String] {
        try ImageFile.checkSize(data, name: name, maxBytes: maxBytes)
        return try textChunks(size: UInt64(data.count), path: name) { offset, count in
            guard offset < UInt64(data.count) else { return [] }
            let start = data.startIndex + Int(offset)
            return [UInt8](data[start..<min(data.endIndex, start + count)])
        }
    }

    /// `image` as PNG bytes, encoded in memory exactly as `write(_:to:text:)` writes a file, e.g.
    /// for an HTTP reply.
    public static func encoded(_ image: RGBImage, text: [(key: String, value: String)] = []) throws -> Data {
        var message = [CChar](repeating: 0, count: 512)
        var bytes: UnsafeMutablePointer<UInt8>?
        var size = 0
        let keys = text.map { strdup($0.key) }, values = text.map { strdup($0.value) }
        defer { (keys + values).forEach { free($0) } }
        let status = image.pixels.withUnsafeBufferPointer { pixels in
            keys.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
                values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                    pk_png_write_memory(pixels.baseAddress, UInt32(image.width), UInt32(image.height), 3,
                                        k.baseAddress, v.baseAddress, Int32(text.count), &bytes, &size,
                                        &message, message.count)
                }
            }
        }
        guard status == 0, let bytes else { throw ImagingError.write(path: "the encoded image", reason: messageText(message)) }
        return Data(bytesNoCopy: bytes, count: size, deallocator: .free)
    }
}
