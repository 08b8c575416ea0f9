import Foundation

extension ImageFile {
    /// Reads a PNG, JPEG or WebP held in memory (e.g. an upload) exactly as `read(_:maxPixels:)`
    /// reads a file: the bytes go to a private temporary file (mode 0600, removed afterwards) that
    /// the same readers open. More than `maxBytes` is refused before anything is written.
    /// Errors are `ImagingError.read` naming `name`.
    public static func read(data: Data, name: String = "the uploaded image", maxBytes: Int = maxFileBytes,
                            maxPixels: Int = 1 << 28) throws -> RGBImage {
        try withTemporaryFile(data, name: name, maxBytes: maxBytes) { try read($0, maxPixels: maxPixels) }
    }

    /// Runs `body` on a private temporary file holding `data`, then removes the file; errors
    /// raised with the file's path are re-raised naming `name`.
    static func withTemporaryFile<T>(_ data: Data, name: String, maxBytes: Int, _ body: (URL) throws -> T) throws -> T {
        guard data.count <= maxBytes else {
            throw ImagingError.read(path: name, reason: "it holds \(data.count) bytes, more than the \(maxBytes) allowed")
        }
        var template = Array((NSTemporaryDirectory() + "/panorama-upload-XXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw ImagingError.read(path: name, reason: "cannot create a temporary file") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(path) }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        do {
            try handle.write(contentsOf: data)
            try handle.close()
        } catch {
            throw ImagingError.read(path: name, reason: "cannot write a temporary file (\(error.localizedDescription))")
        }
        do {
            return try body(URL(fileURLWithPath: path))
        } catch ImagingError.read(_, let reason) {
            throw ImagingError.read(path: name, reason: reason)
        }
    }
}

extension PNG {
    /// The text chunks of a PNG held in memory, read as `textChunks(of:)` reads a file.
    public static func textChunks(data: Data, name: String = "the uploaded image",
                                  maxBytes: Int = ImageFile.maxFileBytes) throws -> [String: String] {
        try ImageFile.withTemporaryFile(data, name: name, maxBytes: maxBytes) { try textChunks(of: $0) }
    }
}

extension PNG {
    /// `image` as PNG bytes (written through a private temporary file, as `write(_:to:text:)`
    /// writes), e.g. for an HTTP reply.
    public static func encoded(_ image: RGBImage, text: [(key: String, value: String)] = []) throws -> Data {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory())
        let url = directory.appendingPathComponent("panorama-encode-\(getpid())-\(UUID().uuidString).png")
        defer { unlink(url.path) }
        try write(image, to: url, text: text)
        return try Data(contentsOf: url)
    }
}
