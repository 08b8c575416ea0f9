import Foundation
import Imaging
import XCTest

/// JPEG and WebP input through `ImageFile.read`, against Pillow's decoding of the same files
/// (tools/reference/make_image_input_fixtures.py writes the files and Pillow's pixels).
final class ImageInputTests: XCTestCase {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/images/input")

    struct Manifest: Decodable {
        struct Decoded: Decodable { let width: Int; let height: Int }
        let decode: [String: Decoded]
        let refuse: [String: String]
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: folder.appendingPathComponent("expected.json")))
    }

    static func expected(_ name: String) throws -> RGBImage {
        let stem = (name as NSString).deletingPathExtension
        return try PNG.read(folder.appendingPathComponent("expected/\(stem).png"))
    }

    /// Every JPEG (baseline 4:2:0, 4:2:2, 4:4:4, progressive, grey, CMYK, orientations 2–8) and
    /// WebP (lossy, lossless, with alpha) decodes to Pillow's pixels exactly: libjpeg-turbo with
    /// Pillow's settings (ISLOW IDCT, fancy upsampling) and libwebp give the same bytes.
    func testDecodesAsPillowDoes() throws {
        let manifest = try Self.manifest()
        XCTAssertEqual(manifest.decode.count, 19)
        for (name, size) in manifest.decode.sorted(by: { $0.key < $1.key }) {
            let image = try ImageFile.read(Self.folder.appendingPathComponent(name))
            let reference = try Self.expected(name)
            XCTAssertEqual([image.width, image.height], [size.width, size.height], name)
            XCTAssertEqual([reference.width, reference.height], [size.width, size.height], name)
            guard image.pixels.count == reference.pixels.count else { continue }
            let differences = zip(image.pixels, reference.pixels).map { abs(Int($0) - Int($1)) }
            XCTAssertEqual(differences.max(), 0, "\(name): max abs difference from Pillow, mean \(Double(differences.reduce(0, +)) / Double(differences.count))")
        }
    }

    func testOrientationsTurnTheSameStoredPixels() throws {
        // all orientation files hold baseline-420's pixels; 5–8 swap width and height
        let stored = try ImageFile.read(Self.folder.appendingPathComponent("baseline-420.jpg"))
        for n in 2...8 {
            let image = try ImageFile.read(Self.folder.appendingPathComponent("orientation-\(n).jpg"))
            XCTAssertEqual(image, stored.oriented(n), "orientation \(n)")
            XCTAssertEqual(image.width, n >= 5 ? stored.height : stored.width, "orientation \(n)")
        }
        // XMP's orientation counts only without an EXIF orientation tag
        XCTAssertEqual(try ImageFile.read(Self.folder.appendingPathComponent("orientation-xmp.jpg")), stored.oriented(6))
        XCTAssertEqual(try ImageFile.read(Self.folder.appendingPathComponent("orientation-exif-over-xmp.jpg")), stored.oriented(3))
    }

    func testRefusedFilesAreErrorsNamingTheFileAndTheProblem() throws {
        let manifest = try Self.manifest()
        XCTAssertEqual(manifest.refuse.count, 8)
        for (name, word) in manifest.refuse.sorted(by: { $0.key < $1.key }) {
            XCTAssertThrowsError(try ImageFile.read(Self.folder.appendingPathComponent(name)), name) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(name), text)
                XCTAssertTrue(text.contains(word), "\(name): \(text) should mention \(word)")
            }
        }
        // the truncated JPEGs are refused for their missing data, not padded with grey
        XCTAssertThrowsError(try ImageFile.read(Self.folder.appendingPathComponent("truncated.jpg"))) { error in
            XCTAssertTrue("\(error)".contains("Premature end of JPEG file"), "\(error)")
        }
        XCTAssertThrowsError(try ImageFile.read(Self.folder.appendingPathComponent("text.jpg"))) { error in
            XCTAssertTrue("\(error)".contains("PNG, JPEG or WebP"), "\(error)")
        }
        XCTAssertThrowsError(try ImageFile.read(Self.folder.appendingPathComponent("no-such-file.jpg"))) { error in
            XCTAssertTrue("\(error)".contains("no-such-file.jpg"), "\(error)")
        }
    }

    /// The format comes from the bytes: a WebP named .png and a PNG named .jpg read as what they are.
    func testFormatIsSniffedNotTakenFromTheName() throws {
        let directory = try temporaryDirectory()
        let webp = directory.appendingPathComponent("really-webp.png")
        try FileManager.default.copyItem(at: Self.folder.appendingPathComponent("lossless.webp"), to: webp)
        XCTAssertEqual(try ImageFile.read(webp), try Self.expected("lossless.webp"))
        let pngs = Self.folder.deletingLastPathComponent()
        for kind in ["rgb8", "rgba8", "grey16", "palette4"] {
            let png = directory.appendingPathComponent("\(kind).jpg")
            try FileManager.default.copyItem(at: pngs.appendingPathComponent("\(kind).png"), to: png)
            XCTAssertEqual(try ImageFile.read(png), try PNG.read(pngs.appendingPathComponent("\(kind).png")), kind)
        }
        XCTAssertEqual(ImageFile.format(ofFileStarting: Array("RIFF\u{0}\u{0}\u{0}\u{0}WAVE".utf8)), nil)
        XCTAssertEqual(ImageFile.format(ofFileStarting: [0xFF, 0xD8]), nil)
        XCTAssertEqual(ImageFile.format(ofFileStarting: [0xFF, 0xD8, 0xFF, 0xE0]), .jpeg)
    }

    func testMaskLumaIsPillowsConvertL() throws {
        for name in ["lossless.webp", "cmyk.jpg"] {
            let grey = try ImageFile.readGrey(Self.folder.appendingPathComponent(name))
            let stem = (name as NSString).deletingPathExtension
            let reference = try PNG.read(Self.folder.appendingPathComponent("expected/luma-\(stem).png"))
            XCTAssertEqual([grey.width, grey.height], [reference.width, reference.height], name)
            XCTAssertEqual(grey.pixels, stride(from: 0, to: reference.pixels.count, by: 3).map { reference.pixels[$0] }, name)
        }
        let greyJPEG = try ImageFile.read(Self.folder.appendingPathComponent("grey.jpg"))
        let luma = try ImageFile.readGrey(Self.folder.appendingPathComponent("grey.jpg"))
        XCTAssertEqual(luma.pixels, stride(from: 0, to: greyJPEG.pixels.count, by: 3).map { greyJPEG.pixels[$0] })
    }

    /// A header claiming 60000x60000 is refused from the header: the small file could not fill
    /// the 10 GB such an image needs, which is never allocated.
    func testHugeDeclaredSizeIsRefusedBeforeAllocating() throws {
        var bytes = [UInt8](try Data(contentsOf: Self.folder.appendingPathComponent("baseline-420.jpg")))
        let sof = try XCTUnwrap(Self.startOfFrame(bytes))
        bytes.replaceSubrange((sof + 5)..<(sof + 9), with: [0xEA, 0x60, 0xEA, 0x60])  // height, width = 60000
        let url = try temporaryDirectory().appendingPathComponent("huge.jpg")
        try Data(bytes).write(to: url)
        XCTAssertThrowsError(try ImageFile.read(url)) { error in
            XCTAssertTrue("\(error)".contains("60000x60000 pixels is larger than allowed"), "\(error)")
        }
        // the limit is the caller's, for every format
        for name in ["baseline-420.jpg", "progressive.jpg", "lossy.webp", "lossless.webp", "../rgb8.png"] {
            XCTAssertThrowsError(try ImageFile.read(Self.folder.appendingPathComponent(name), maxPixels: 90), name) { error in
                XCTAssertTrue("\(error)".contains("larger than allowed"), "\(error)")
            }
        }
        XCTAssertNoThrow(try ImageFile.read(Self.folder.appendingPathComponent("lossy.webp"), maxPixels: 37 * 23))
    }

    func testExifOrientationParsing() {
        func payload(bigEndian: Bool, tag: UInt16 = 0x0112, type: UInt16 = 3, count: UInt32 = 1, value: UInt16,
                     ifdOffset: UInt32 = 8, entries: UInt16 = 1) -> [UInt8] {
            func u16(_ v: UInt16) -> [UInt8] { bigEndian ? [UInt8(v >> 8), UInt8(v & 0xFF)] : [UInt8(v & 0xFF), UInt8(v >> 8)] }
            func u32(_ v: UInt32) -> [UInt8] { let b = (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) }; return bigEndian ? b.reversed() : b }
            return Array("Exif".utf8) + [0, 0] + (bigEndian ? [0x4D, 0x4D] : [0x49, 0x49]) + u16(42) + u32(ifdOffset)
                + u16(entries) + u16(tag) + u16(type) + u32(count) + u16(value) + u16(0) + u32(0)
        }
        for big in [false, true] {
            for n in 1...8 { XCTAssertEqual(ImageFile.exifOrientation(payload(bigEndian: big, value: UInt16(n))), n) }
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, value: 0)))
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, value: 9)))
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, tag: 0x0110, value: 6)))
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, type: 2, value: 6)))
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, count: 2, value: 6)))
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, value: 6, ifdOffset: 0xFFFF_FFFF)))
            XCTAssertNil(ImageFile.exifOrientation(payload(bigEndian: big, value: 6, ifdOffset: 0x7FFF_FFFE)))
            // an entry count past the end: the walk stops at the end of the data
            XCTAssertEqual(ImageFile.exifOrientation(payload(bigEndian: big, value: 6, entries: 0xFFFF)), 6)
            let whole = payload(bigEndian: big, value: 6)
            // cut anywhere before the end of the orientation value (the rest of IFD0 is not needed)
            for cut in 0..<(whole.count - 6) { XCTAssertNil(ImageFile.exifOrientation(Array(whole.prefix(cut))), "cut at \(cut)") }
        }
        XCTAssertNil(ImageFile.exifOrientation(Array("Exif".utf8) + [0, 0] + [0x49, 0x4D, 42, 0, 8, 0, 0, 0]))
        XCTAssertNil(ImageFile.exifOrientation([]))
    }

    func testXMPOrientationParsing() {
        func orientation(_ text: String) -> Int? { ImageFile.xmpOrientation(Array(text.utf8)) }
        XCTAssertEqual(orientation(#"<rdf:Description tiff:Orientation="6"/>"#), 6)
        XCTAssertEqual(orientation("<tiff:Orientation>8</tiff:Orientation>"), 8)
        XCTAssertEqual(orientation(#"tiff:Orientation=x tiff:Orientation="3""#), 3)  // the first that matches
        XCTAssertEqual(orientation(#"tiff:Orientation="12""#), 1)  // one digit, as Pillow's pattern takes
        XCTAssertNil(orientation(#"tiff:Orientation="9""#))
        XCTAssertNil(orientation(#"tiff:Orientation=""#))
        XCTAssertNil(orientation("tiff:Orientation>"))
        XCTAssertNil(orientation("tiff:Orientation"))
        XCTAssertNil(orientation(""))
    }

    /// Mutated copies of every valid fixture (truncated, bytes flipped, garbage inserted, header
    /// fields set to extremes) either decode or throw: no crash, no hang. Deterministic.
    func testMutatedFilesDecodeOrThrow() throws {
        let names = try Self.manifest().decode.keys.sorted() + ["../rgb8.png", "../rgba8.png"]
        let url = try temporaryDirectory().appendingPathComponent("mutant")
        var random = SplitMix64(seed: 23)
        var decoded = 0, refused = 0
        var slowest = (seconds: 0.0, variant: "")
        let start = Date()
        for name in names {
            let original = [UInt8](try Data(contentsOf: Self.folder.appendingPathComponent(name)))
            for variant in 0..<300 {
                var bytes = original
                switch variant % 5 {
                case 0:  // truncated anywhere
                    bytes = Array(bytes.prefix(random.below(bytes.count)))
                case 1:  // a few random bytes changed
                    for _ in 0..<(1 + random.below(8)) { bytes[random.below(bytes.count)] = UInt8(random.below(256)) }
                case 2:  // garbage inserted
                    let garbage = (0..<(1 + random.below(64))).map { _ in UInt8(random.below(256)) }
                    bytes.insert(contentsOf: garbage, at: random.below(bytes.count + 1))
                case 3:  // a 2- or 4-byte field in the headers set to an extreme
                    let width = random.below(2) == 0 ? 2 : 4
                    let at = random.below(min(bytes.count, 64) - width + 1)
                    let value: UInt8 = [0xFF, 0x00, 0x7F, 0x80][random.below(4)]
                    for i in 0..<width { bytes[at + i] = value }
                default:  // the image size fields themselves
                    Self.setSizeFields(&bytes, name: name, value: [0xFFFF, 0x3FFF, 0, 1, 0x8000][random.below(5)])
                }
                try Data(bytes).write(to: url)
                let began = Date()
                defer {
                    let took = Date().timeIntervalSince(began)
                    if took > slowest.seconds { slowest = (took, "\(name) variant \(variant)") }
                }
                do {
                    let image = try ImageFile.read(url, maxPixels: 1 << 22)
                    XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
                    decoded += 1
                } catch is ImagingError {
                    refused += 1
                }
            }
        }
        let seconds = Date().timeIntervalSince(start)
        print("mutation fuzz: \(names.count) files x 300 variants: \(decoded) decoded, \(refused) refused, \(String(format: "%.1f", seconds)) s; slowest \(slowest.variant), \(String(format: "%.4f", slowest.seconds)) s")
        XCTAssertGreaterThan(decoded, 0)
        XCTAssertGreaterThan(refused, names.count * 60)
        XCTAssertLessThan(seconds, 120)
    }

    /// Offset of the first SOFn marker (FFC0–FFCF but not DHT C4, JPG C8, DAC CC) in a JPEG.
    static func startOfFrame(_ bytes: [UInt8]) -> Int? {
        var at = 2
        while at + 4 <= bytes.count, bytes[at] == 0xFF {
            let marker = bytes[at + 1]
            if (0xC0...0xCF).contains(marker), ![0xC4, 0xC8, 0xCC].contains(marker) { return at }
            at += 2 + (Int(bytes[at + 2]) << 8 | Int(bytes[at + 3]))
        }
        return nil
    }

    /// Writes `value` into the width and height fields of a JPEG's SOF, a WebP's VP8X canvas
    /// and VP8/VP8L frame header, or a PNG's IHDR (no CRC fix: libpng must refuse it).
    static func setSizeFields(_ bytes: inout [UInt8], name: String, value: Int) {
        func put(_ at: Int, _ fieldBytes: [UInt8]) {
            guard at >= 0, at + fieldBytes.count <= bytes.count else { return }
            bytes.replaceSubrange(at..<(at + fieldBytes.count), with: fieldBytes)
        }
        let be16 = [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)], le16 = Array(be16.reversed())
        if name.hasSuffix(".jpg"), let sof = startOfFrame(bytes) {
            put(sof + 5, be16 + be16)
        } else if name.hasSuffix(".png") {
            put(16, [0, 0] + be16 + [0, 0] + be16)
        } else if bytes.count > 30 {
            let chunk = String(decoding: bytes[12..<16], as: UTF8.self)
            switch chunk {
            case "VP8X": put(24, Array(le16 + [0]) + le16 + [0])  // 24-bit canvas width - 1, height - 1
            case "VP8L": put(21, le16 + le16)  // 14-bit fields packed in 4 bytes: all set or cleared
            default: put(26, le16 + le16)  // VP8 key frame: 14-bit width and height
            }
        }
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("image-input-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}

/// A small deterministic generator (SplitMix64), so the fuzz variants are the same on every run.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value in 0..<bound (0 when bound is 0).
    mutating func below(_ bound: Int) -> Int { bound <= 0 ? 0 : Int(next() % UInt64(bound)) }
}
