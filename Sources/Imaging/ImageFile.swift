import CImaging
import Foundation

/// An 8-bit single-channel image (a mask), rows top to bottom.
public struct GreyImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height, "GreyImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Luma as Pillow's `convert("L")` computes it (ITU-R 601-2 weights in 16-bit fixed point,
    /// rounded), so grey stays grey exactly: (g, g, g) gives g.
    public init(luma image: RGBImage) {
        let p = image.pixels
        let values = (0..<(image.width * image.height)).map { (i: Int) -> UInt8 in
            let r = Int(p[3 * i]) * 19595, g = Int(p[3 * i + 1]) * 38470, b = Int(p[3 * i + 2]) * 7471
            return UInt8((r + g + b + 0x8000) >> 16)
        }
        self.init(width: image.width, height: image.height, pixels: values)
    }
}

/// Image files of any format the program reads (PNG, JPEG, WebP), told apart by their first
/// bytes, never by the name: a PNG saved as "photo.jpg" reads as the PNG it is.
public enum ImageFile {
    /// The formats `read` accepts.
    public enum Format: String, Sendable, CaseIterable {
        case png = "PNG", jpeg = "JPEG", webp = "WebP"
    }

    /// The names of the formats, for messages and help texts.
    public static let formatList = "PNG, JPEG or WebP"

    /// Largest JPEG or WebP file read (they are read whole into memory; a JPEG of the default
    /// pixel limit at the best quality is well under this).
    public static let maxFileBytes = 1 << 30

    /// The format whose signature `head` (the file's first bytes, 12 suffice) starts with; nil
    /// for anything else. PNG: its 8-byte signature; JPEG: SOI and the next marker's FF;
    /// WebP: "RIFF", a length, "WEBP".
    public static func format(ofFileStarting head: [UInt8]) -> Format? {
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if head.count >= 12, head.starts(with: Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) { return .webp }
        return nil
    }

    /// Reads a PNG, JPEG or WebP as 8-bit RGB, the format found from the file's bytes.
    ///
    /// - PNG: any colour type and depth (see `PNG.read`).
    /// - JPEG: baseline or progressive, grey, YCbCr, RGB, CMYK or YCCK (Adobe-inverted CMYK, as
    ///   Pillow converts it), turned upright by its EXIF orientation (or, without one, its XMP
    ///   orientation) as Pillow's `ImageOps.exif_transpose` does. Pixels equal Pillow's. A file libjpeg finds corrupt,
    ///   even where it would pad over the damage (truncated files), is an error.
    /// - WebP: lossy or lossless, still images only.
    ///
    /// Alpha is dropped without compositing, in every format. Width x height over `maxPixels` is
    /// an error raised from the header, before the image is allocated. Errors are
    /// `ImagingError.read` naming the file.
    public static func read(_ url: URL, maxPixels: Int = 1 << 28) throws -> RGBImage {
        let path = url.path
        func failure(_ reason: String) -> ImagingError { .read(path: path, reason: reason) }
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: url) } catch {
            throw failure("cannot open for reading (\(error.localizedDescription))")
        }
        defer { try? handle.close() }
        let head: [UInt8], size: UInt64
        do {
            head = [UInt8](try handle.read(upToCount: 12) ?? Data())
            size = try handle.seekToEnd()
        } catch {
            throw failure("cannot read (\(error.localizedDescription))")
        }
        guard !head.isEmpty else { throw failure("the file is empty, not a \(formatList) image") }
        guard let format = format(ofFileStarting: head) else {
            let start = head.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
            throw failure("not a \(formatList) file (whatever its name says; it starts with the bytes \(start))")
        }
        if format == .png { return try PNG.read(url, maxPixels: maxPixels) }
        guard size <= UInt64(maxFileBytes) else {
            throw failure("the file holds \(size) bytes, more than the \(maxFileBytes) allowed for a \(format.rawValue) image")
        }
        let bytes: [UInt8]
        do {
            try handle.seek(toOffset: 0)
            bytes = [UInt8](try handle.readToEnd() ?? Data())
        } catch {
            throw failure("cannot read (\(error.localizedDescription))")
        }
        return try bytes.withUnsafeBytes { try decode($0, format: format, maxPixels: maxPixels, failure: failure) }
    }

    /// A JPEG or WebP held in `bytes`, decoded and turned upright: the part of `read` after the
    /// bytes are in memory, shared by the file and in-memory readers.
    static func decode(_ bytes: UnsafeRawBufferPointer, format: Format, maxPixels: Int,
                       failure: (String) -> ImagingError) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 512)
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        var exif: UnsafeMutablePointer<UInt8>?, xmp: UnsafeMutablePointer<UInt8>?
        var exifSize = 0, xmpSize = 0
        let data = bytes.bindMemory(to: UInt8.self)
        let status: Int32
        switch format {
        case .jpeg:
            status = pk_jpeg_read_rgb8(data.baseAddress, data.count, &pixels, &width, &height, &exif, &exifSize,
                                       &xmp, &xmpSize, UInt64(maxPixels), &message, message.count)
        default:
            status = pk_webp_read_rgb8(data.baseAddress, data.count, &pixels, &width, &height,
                                       UInt64(maxPixels), &message, message.count)
        }
        defer { free(pixels); free(exif); free(xmp) }
        guard status == 0, let pixels else { throw failure(messageText(message)) }
        let image = RGBImage(width: Int(width), height: Int(height),
                             pixels: Array(UnsafeBufferPointer(start: pixels, count: Int(width) * Int(height) * 3)))
        // as Pillow's getexif: the XMP orientation counts only when EXIF has no orientation tag
        var orientation: Int?
        switch exif.map({ orientationTag(Array(UnsafeBufferPointer(start: $0, count: exifSize))) }) {
        case .present(let value)?: orientation = value
        default: orientation = xmp.flatMap { xmpOrientation(Array(UnsafeBufferPointer(start: $0, count: xmpSize))) }
        }
        return image.oriented(orientation ?? 1)
    }

    /// Reads an image as `read` does, as one channel of luma (Pillow's `convert("L")`): for
    /// masks, which are usually grey already, where it is the grey value exactly.
    public static func readGrey(_ url: URL, maxPixels: Int = 1 << 28) throws -> GreyImage {
        GreyImage(luma: try read(url, maxPixels: maxPixels))
    }

    /// The orientation (1–8) in a JPEG APP1 Exif payload ("Exif\0\0" then a TIFF header and IFD0),
    /// or nil when there is none or it is malformed or out of range (the image is then used as
    /// stored, as Pillow does). Both byte orders; the tag (0x0112) must be a SHORT or LONG of
    /// count 1. Every offset is checked against the payload.
    public static func exifOrientation(_ payload: [UInt8]) -> Int? {
        if case .present(let value) = orientationTag(payload) { return value }
        return nil
    }

    /// The orientation in an XMP packet, found as Pillow finds it (the first match of the
    /// pattern `tiff:Orientation(="|>)([0-9])`): a single digit, nil unless 1–8.
    public static func xmpOrientation(_ packet: [UInt8]) -> Int? {
        let name = Array("tiff:Orientation".utf8)
        var at = 0
        while at + name.count + 1 < packet.count {
            if packet[at] == name[0], Array(packet[at..<(at + name.count)]) == name {
                var next = at + name.count
                if packet[next] == UInt8(ascii: "=") && packet[next + 1] == UInt8(ascii: "\"") { next += 2 }
                else if packet[next] == UInt8(ascii: ">") { next += 1 }
                else { at += 1; continue }
                if next < packet.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(packet[next]) {
                    let value = Int(packet[next] - UInt8(ascii: "0"))
                    return (1...8).contains(value) ? value : nil
                }
            }
            at += 1
        }
        return nil
    }

    /// Whether the EXIF payload has an orientation tag, and its value when it is a valid one.
    enum OrientationTag { case absent, present(Int?) }

    static func orientationTag(_ payload: [UInt8]) -> OrientationTag {
        guard payload.count >= 6, payload.starts(with: [0x45, 0x78, 0x69, 0x66, 0, 0]) else { return .absent }
        let tiff = Array(payload.dropFirst(6))
        guard tiff.count >= 8 else { return .absent }
        let bigEndian: Bool
        switch (tiff[0], tiff[1]) {
        case (0x4D, 0x4D): bigEndian = true
        case (0x49, 0x49): bigEndian = false
        default: return .absent
        }
        func unsigned(at offset: Int, bytes: Int) -> Int? {
            guard offset >= 0, offset <= tiff.count - bytes else { return nil }
            let slice = tiff[offset..<(offset + bytes)]
            return (bigEndian ? Array(slice) : slice.reversed()).reduce(0) { $0 << 8 | Int($1) }
        }
        guard unsigned(at: 2, bytes: 2) == 42, let ifd = unsigned(at: 4, bytes: 4),
              let entries = unsigned(at: ifd, bytes: 2) else { return .absent }
        for index in 0..<entries {
            let entry = ifd + 2 + 12 * index
            guard let tag = unsigned(at: entry, bytes: 2) else { return .absent }
            guard tag == 0x0112 else { continue }
            guard let type = unsigned(at: entry + 2, bytes: 2), unsigned(at: entry + 4, bytes: 4) == 1 else { return .present(nil) }
            // a value of 4 bytes or fewer sits in the entry itself, left-justified
            let value: Int?
            switch type {
            case 3: value = unsigned(at: entry + 8, bytes: 2)
            case 4: value = unsigned(at: entry + 8, bytes: 4)
            default: value = nil
            }
            guard let value, (1...8).contains(value) else { return .present(nil) }
            return .present(value)
        }
        return .absent
    }
}

extension RGBImage {
    /// The image turned upright from EXIF orientation `orientation` (1–8; others leave it
    /// unchanged), as Pillow's `exif_transpose`: 2 mirrors left-right, 3 turns 180°, 4 mirrors
    /// top-bottom, 5 transposes, 6 turns 90° clockwise, 7 transverses, 8 turns 90° anticlockwise.
    public func oriented(_ orientation: Int) -> RGBImage {
        guard (2...8).contains(orientation) else { return self }
        let (w, h) = (width, height)
        let swaps = orientation >= 5
        let (outW, outH) = swaps ? (h, w) : (w, h)
        // the source pixel of output pixel (x, y)
        let source: (Int, Int) -> (Int, Int)
        switch orientation {
        case 2: source = { x, y in (w - 1 - x, y) }
        case 3: source = { x, y in (w - 1 - x, h - 1 - y) }
        case 4: source = { x, y in (x, h - 1 - y) }
        case 5: source = { x, y in (y, x) }
        case 6: source = { x, y in (y, h - 1 - x) }
        case 7: source = { x, y in (w - 1 - y, h - 1 - x) }
        default: source = { x, y in (w - 1 - y, x) }
        }
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0..<outH {
            for x in 0..<outW {
                let (sx, sy) = source(x, y)
                let from = 3 * (sy * w + sx), to = 3 * (y * outW + x)
                out[to] = pixels[from]
                out[to + 1] = pixels[from + 1]
                out[to + 2] = pixels[from + 2]
            }
        }
        return RGBImage(width: outW, height: outH, pixels: out)
    }
}
