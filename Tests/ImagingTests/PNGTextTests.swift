import Foundation
import Imaging
import XCTest

/// PNG text chunks: tEXt for ASCII and iTXt for other text when writing; tEXt, zTXt and iTXt when
/// reading (fixtures from tools/reference/make_infotext_fixtures.py), and hostile files.
final class PNGTextTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/infotext")
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("png-text-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    /// The chunk types of a PNG file, in order.
    private func chunkTypes(_ url: URL) throws -> [String] {
        let data = [UInt8](try Data(contentsOf: url))
        var types: [String] = [], offset = 8
        while offset + 8 <= data.count {
            let length = data[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            types.append(String(decoding: data[(offset + 4)..<(offset + 8)], as: UTF8.self))
            offset += 12 + length
        }
        return types
    }

    func testASCIITextIsTEXtAndOtherTextITXt() throws {
        let image = RGBImage(width: 2, height: 1, pixels: [1, 2, 3, 4, 5, 6])
        let url = folder.appendingPathComponent("a.png")
        let unicode = "雪山 — café\nSteps: 2"
        try PNG.write(image, to: url, text: [(key: "parameters", value: unicode), (key: "regions", value: "[]")])
        XCTAssertEqual(try chunkTypes(url).filter { $0.hasSuffix("Xt") }, ["iTXt", "tEXt"])
        XCTAssertEqual(try PNG.textChunks(of: url), ["parameters": unicode, "regions": "[]"])
        XCTAssertEqual(try PNG.read(url), image)
    }

    func testFixtures() throws {
        let comfy = try PNG.textChunks(of: Self.fixtures.appendingPathComponent("comfyui.png"))
        XCTAssertEqual(Set(comfy.keys), ["prompt", "workflow"])
        XCTAssertTrue(comfy["prompt"]!.contains("\"CLIPTextEncode\""))
        let a1111 = try PNG.textChunks(of: Self.fixtures.appendingPathComponent("a1111-itxt.png"))
        XCTAssertTrue(a1111["parameters"]!.hasPrefix("雪山 — café au lait\nSteps: 12"), a1111["parameters"]!)
        let compressed = try PNG.textChunks(of: Self.fixtures.appendingPathComponent("compressed.png"))
        XCTAssertTrue(compressed["parameters"]!.hasPrefix("a lake at dawn,\nmist over the water"))
        XCTAssertEqual(compressed["regions"], #"[{"prompt":"ü","rect":[0,0,1,1]}]"#)
    }

    /// A tEXt chunk is Latin-1; UTF-8 bytes in tEXt (this program's PNGs before it wrote iTXt,
    /// and other tools') are read as UTF-8.
    func testTEXtEncodings() throws {
        func png(_ text: [UInt8]) throws -> URL {
            let url = folder.appendingPathComponent("t\(text.count).png")
            let source = [UInt8](try Data(contentsOf: Self.fixtures.appendingPathComponent("comfyui.png")))
            // signature + IHDR (33 bytes), then our chunk (CRC not checked by the reader), then the rest
            let body = Array("tEXt".utf8) + Array("parameters".utf8) + [0] + text
            let length = UInt32(body.count - 4)
            let chunk = withUnsafeBytes(of: length.bigEndian, Array.init) + body + [0, 0, 0, 0]
            try Data(source[0..<33] + chunk + source[33...]).write(to: url)
            return url
        }
        XCTAssertEqual(try PNG.textChunks(of: try png([0x63, 0x61, 0x66, 0xE9]))["parameters"], "café")
        XCTAssertEqual(try PNG.textChunks(of: try png(Array("café ü".utf8)))["parameters"], "café ü")
    }

    func testHostileFiles() throws {
        func chunks(_ name: String) throws -> [String: String] {
            try PNG.textChunks(of: Self.fixtures.appendingPathComponent(name))
        }
        XCTAssertThrowsError(try chunks("bomb.png")) { XCTAssertTrue("\($0)".contains("more than the"), "\($0)") }
        XCTAssertEqual(try chunks("bad-utf8.png"), [:], "iTXt that is not UTF-8 is skipped")
        XCTAssertThrowsError(try chunks("truncated-text.png")) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        XCTAssertThrowsError(try chunks("huge-length.png")) { XCTAssertTrue("\($0)".contains("past the end"), "\($0)") }
        let notPNG = folder.appendingPathComponent("x.png")
        try Data("GIF89a".utf8).write(to: notPNG)
        XCTAssertThrowsError(try PNG.textChunks(of: notPNG)) { XCTAssertTrue("\($0)".contains("not a PNG"), "\($0)") }
        XCTAssertThrowsError(try PNG.textChunks(of: folder.appendingPathComponent("missing.png")))
        // every prefix of a PNG with text is an error or a subset, never a crash
        let whole = try Data(contentsOf: Self.fixtures.appendingPathComponent("compressed.png"))
        for n in 0..<whole.count {
            let cut = folder.appendingPathComponent("cut.png")
            try whole.prefix(n).write(to: cut)
            if let found = try? PNG.textChunks(of: cut) { XCTAssertTrue(found.count <= 2) }
        }
    }
}
