import Foundation
import Imaging
import XCTest

/// Images read from and encoded into memory (uploads, HTTP replies) give what the file readers
/// and writer give: the same pixels, the same bytes, the same refusals with the same reasons.
final class InMemoryTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("in-memory-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    /// Every image fixture (PNG kinds, JPEG, WebP, PNGs with text, the broken ones).
    static func imageFiles() throws -> [URL] {
        var files: [URL] = []
        for sub in ["images", "images/input", "infotext"] {
            let dir = fixtures.appendingPathComponent(sub)
            for name in try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
            where ["png", "jpg", "webp"].contains((name as NSString).pathExtension) {
                files.append(dir.appendingPathComponent(name))
            }
        }
        return files
    }

    /// The outcome of a read: the image, or the reason it was refused (without the file's name).
    enum Outcome<T: Equatable>: Equatable {
        case value(T)
        case refused(String)
        case other(String)
    }

    static func outcome<T: Equatable>(_ body: () throws -> T) -> Outcome<T> {
        do { return .value(try body()) } catch ImagingError.read(_, let reason) { return .refused(reason) } catch {
            return .other("\(error)")
        }
    }

    private func assertSame(_ bytes: Data, _ label: String, maxPixels: Int = 1 << 28, text: Bool = true) throws {
        let url = folder.appendingPathComponent("same")
        try bytes.write(to: url)
        let fromFile = Self.outcome { try ImageFile.read(url, maxPixels: maxPixels) }
        let fromMemory = Self.outcome { try ImageFile.read(data: bytes, maxPixels: maxPixels) }
        XCTAssertEqual(fromFile, fromMemory, label)
        if case .other = fromMemory { XCTFail("\(label): not an ImagingError: \(fromMemory)") }
        if text && bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            XCTAssertEqual(Self.outcome { try PNG.textChunks(of: url) }, Self.outcome { try PNG.textChunks(data: bytes) }, "text of \(label)")
        }
    }

    func testFixturesReadAlike() throws {
        let files = try Self.imageFiles()
        XCTAssertGreaterThan(files.count, 40)
        var decoded = 0
        for url in files {
            let bytes = try Data(contentsOf: url)
            try assertSame(bytes, url.lastPathComponent)
            if (try? ImageFile.read(data: bytes)) != nil { decoded += 1 }
            // a size limit refuses alike, from the header
            try assertSame(bytes, "\(url.lastPathComponent) over 100 pixels", maxPixels: 100, text: false)
        }
        XCTAssertGreaterThan(decoded, 30, "most fixtures are valid images")
        // a slice of a larger buffer (Data with a non-zero start index) reads as its own bytes
        let png = try Data(contentsOf: Self.fixtures.appendingPathComponent("images/rgb8.png"))
        let embedded = (Data([1, 2, 3]) + png + Data([4])).dropFirst(3).dropLast()
        XCTAssertEqual(try ImageFile.read(data: embedded), try ImageFile.read(data: png))
        XCTAssertEqual(try PNG.textChunks(data: embedded), try PNG.textChunks(data: png))
    }

    /// Mutated copies of fixtures (truncated, bytes overwritten): whatever the outcome, the
    /// memory reader's equals the file reader's.
    func testMutationsReadAlike() throws {
        var generator = SystemRandomNumberGenerator()
        let names = ["images/rgb8.png", "images/palette4.png", "images/rgba8.png", "infotext/a1111-itxt.png",
                     "images/input/baseline-420.jpg", "images/input/progressive.jpg", "images/input/lossy.webp",
                     "images/input/lossless.webp"]
        for name in names {
            let url = Self.fixtures.appendingPathComponent(name)
            guard let original = try? [UInt8](Data(contentsOf: url)) else { continue }
            for variant in 0..<40 {
                var bytes = original
                if variant % 2 == 0 {
                    bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator)))
                } else {
                    for _ in 0..<4 { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
                }
                try assertSame(Data(bytes), "\(name) variant \(variant)")
            }
        }
    }

    /// A chunk claiming 2 GiB in a 69-byte file is refused at once: libpng skips the ancillary
    /// chunks it would otherwise buffer (allocating and zeroing the claimed length) — found when
    /// uploads began to reach libpng from memory.
    func testHugeChunkLengthsCostNothing() throws {
        let bytes = try Data(contentsOf: Self.fixtures.appendingPathComponent("infotext/huge-length.png"))
        for type in ["tEXt", "zTXt", "iTXt", "iCCP", "eXIf", "sPLT", "abCd"] {
            var mutated = [UInt8](bytes)
            mutated.replaceSubrange(37..<41, with: Array(type.utf8))  // the chunk after IHDR
            let start = Date()
            XCTAssertThrowsError(try ImageFile.read(data: Data(mutated)), type)
            XCTAssertLessThan(Date().timeIntervalSince(start), 0.25, type)  // 1-3 s before the fix
        }
    }

    func testEncodedIsWhatWriteWrites() throws {
        let pixels = (0..<(37 * 23 * 3)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let image = RGBImage(width: 37, height: 23, pixels: pixels)
        for text in [[], [(key: "parameters", value: "a hill\nSteps: 2")], [(key: "parameters", value: "ünïcode ✓"), (key: "other", value: "x")]] {
            let url = folder.appendingPathComponent("written.png")
            try PNG.write(image, to: url, text: text)
            let encoded = try PNG.encoded(image, text: text)
            XCTAssertEqual(encoded, try Data(contentsOf: url), "\(text)")
            XCTAssertEqual(try ImageFile.read(data: encoded), image)
            XCTAssertEqual(try PNG.textChunks(data: encoded), Dictionary(uniqueKeysWithValues: text.map { ($0.key, $0.value) }))
        }
        // large enough that the output buffer grows several times
        let large = RGBImage(width: 700, height: 300, pixels: (0..<(700 * 300 * 3)).map { _ in UInt8.random(in: 0...255) })
        let url = folder.appendingPathComponent("large.png")
        try PNG.write(large, to: url)
        XCTAssertEqual(try PNG.encoded(large), try Data(contentsOf: url))
    }

    func testLimits() throws {
        let png = try Data(contentsOf: Self.fixtures.appendingPathComponent("images/rgb8.png"))
        XCTAssertThrowsError(try ImageFile.read(data: png, name: "upload", maxBytes: png.count - 1)) { error in
            XCTAssertTrue("\(error)".contains("upload") && "\(error)".contains("more than the \(png.count - 1) allowed"), "\(error)")
        }
        XCTAssertNoThrow(try ImageFile.read(data: png, maxBytes: png.count))
        XCTAssertThrowsError(try PNG.textChunks(data: png, maxBytes: 10))
        XCTAssertThrowsError(try ImageFile.read(data: Data(), name: "upload")) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
    }
}
