import Foundation
import Tensors
import Weights
import XCTest

/// Damaged or hostile files must be rejected with messages that name the file and the tensor.
final class SafeTensorsValidationTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = try makeTemporaryDirectory(self)
    }

    private func file(_ bytes: [UInt8], name: String = "model.safetensors") throws -> URL {
        try writeBytes(bytes, to: dir.appendingPathComponent(name))
    }

    private func entry(_ name: String, _ dtype: String, _ shape: String, _ begin: Int, _ end: Int) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(end)]}"
    }

    func testTruncatedFile() throws {
        let good = dir.appendingPathComponent("good.safetensors")
        try SafeTensorsWriter.write([("unet.conv_in.bias", Tensor(shape: [8], data: Array(repeating: 1, count: 8))),
                                     ("unet.conv_in.weight", Tensor(shape: [16, 16], data: Array(repeating: 2, count: 256)))],
                                    dtype: .f32, to: good)
        let bytes = try [UInt8](Data(contentsOf: good))
        let cut = try file(Array(bytes[0..<(bytes.count - 500)]))
        assertThrowsMessage(try SafeTensorsFile(url: cut),
                            contains: [cut.path, "tensor \"unet.conv_in.weight\"", "past the end of the data",
                                       "truncated or corrupt"])
    }

    func testOffsetsPastTheEnd() throws {
        let url = try file(rawSafetensors(header: "{" + entry("unet.conv_in.weight", "F32", "[1024]", 0, 4096) + "}",
                                          data: Array(repeating: 0, count: 2048)))
        assertThrowsMessage(try SafeTensorsFile(url: url),
                            contains: ["model.safetensors: tensor \"unet.conv_in.weight\" has data_offsets [0, 4096] "
                                       + "past the end of the data (2048 bytes); the file is truncated or corrupt"])
    }

    func testHeaderLengthLargerThanFile() throws {
        let url = try file(rawSafetensors(header: "{}", data: [], lengthField: 5000))
        assertThrowsMessage(try SafeTensorsFile(url: url),
                            contains: [url.path, "header length field says 5000 bytes", "only 2 bytes follow",
                                       "truncated"])
        let huge = try file(rawSafetensors(header: "{}", data: [], lengthField: 1 << 40), name: "huge.safetensors")
        assertThrowsMessage(try SafeTensorsFile(url: huge), contains: [huge.path, "100 MB"])
    }

    func testFileSmallerThanEightBytes() throws {
        let url = try file([1, 2, 3])
        assertThrowsMessage(try SafeTensorsFile(url: url), contains: [url.path, "3 bytes long", "at least 8 bytes"])
        let empty = try file([], name: "empty.safetensors")
        assertThrowsMessage(try SafeTensorsFile(url: empty), contains: [empty.path, "0 bytes long"])
    }

    func testDTypeNotMatchingByteLength() throws {
        // F16 [4, 4] needs 32 bytes but the entry spans 64.
        let url = try file(rawSafetensors(header: "{" + entry("w", "F16", "[4, 4]", 0, 64) + "}",
                                          data: Array(repeating: 0, count: 64)))
        assertThrowsMessage(try SafeTensorsFile(url: url),
                            contains: [url.path, "tensor \"w\"", "64 bytes", "F16", "[4, 4]", "needs 32"])
    }

    func testNonJSONHeader() throws {
        let url = try file(rawSafetensors(header: "{\"w\": {dtype: F32}}", data: []))
        assertThrowsMessage(try SafeTensorsFile(url: url), contains: [url.path, "not valid JSON", "at byte"])
        let notObject = try file(rawSafetensors(header: "[1, 2]  ", data: []), name: "list.safetensors")
        assertThrowsMessage(try SafeTensorsFile(url: notObject), contains: [notObject.path, "not a JSON object"])
        // {"<FF FE>":1} — 8 header bytes, two of them not UTF-8.
        let badHeader: [UInt8] = [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]
        let notUTF8 = try file([8, 0, 0, 0, 0, 0, 0, 0] + badHeader, name: "bytes.safetensors")
        assertThrowsMessage(try SafeTensorsFile(url: notUTF8), contains: [notUTF8.path, "UTF-8"])
    }

    func testNegativeOrGarbageShape() throws {
        for shape in ["[-4]", "[2, \"x\"]", "[1.5]", "\"big\"", "[true]"] {
            let url = try file(rawSafetensors(header: "{" + entry("bad.weight", "F32", shape, 0, 16) + "}",
                                              data: Array(repeating: 0, count: 16)))
            assertThrowsMessage(try SafeTensorsFile(url: url), contains: [url.path, "tensor \"bad.weight\"", "shape"])
        }
        let overflow = try file(rawSafetensors(
            header: "{" + entry("o", "F32", "[4611686018427387904, 4611686018427387904]", 0, 16) + "}",
            data: Array(repeating: 0, count: 16)))
        assertThrowsMessage(try SafeTensorsFile(url: overflow), contains: ["tensor \"o\"", "overflows"])
    }

    func testOtherBadEntries() throws {
        let data = [UInt8](repeating: 0, count: 16)
        let cases: [(String, [String])] = [
            ("{" + entry("w", "F8_E4M3", "[16]", 0, 16) + "}", ["\"w\"", "F8_E4M3", "not supported"]),
            ("{" + entry("w", "F32", "[0]", 8, 4) + "}", ["\"w\"", "[8, 4]", "not a valid range"]),
            ("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", ["\"w\"", "data_offsets"]),
            ("{\"w\":{\"shape\":[4],\"data_offsets\":[0,16]}}", ["\"w\"", "no dtype"]),
            ("{\"w\":[1,2]}", ["\"w\"", "instead of an object"]),
            ("{" + entry("w", "F32", "[4]", 0, 16) + "," + entry("w", "F32", "[4]", 0, 16) + "}", ["\"w\"", "twice"]),
            ("{\"__metadata__\":{\"format\":1}}", ["__metadata__", "not a string"]),
        ]
        for (i, (header, fragments)) in cases.enumerated() {
            let url = try file(rawSafetensors(header: header, data: data), name: "case\(i).safetensors")
            assertThrowsMessage(try SafeTensorsFile(url: url), contains: [url.path] + fragments)
        }
    }

    func testMissingFile() {
        let url = dir.appendingPathComponent("absent.safetensors")
        assertThrowsMessage(try SafeTensorsFile(url: url), contains: [url.path, "cannot read"])
    }

    func testUnalignedOffsetsStillRead() throws {
        // Offsets need not be aligned; the header is 7 bytes off alignment and the tensor starts at 1.
        var data: [UInt8] = [0xAA]
        for v in [Float(1.5), -2] { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        let url = try file(rawSafetensors(header: "{" + entry("pad", "U8", "[1]", 0, 1) + "," + entry("u", "F32", "[2]", 1, 9) + "}",
                                          data: data))
        XCTAssertEqual(try SafeTensorsFile(url: url).tensor("u").data, [1.5, -2])
    }

    /// The format indexes the data entirely: overlapping tensors (which would alias each other's
    /// bytes), holes and trailing bytes are refused, as the reference reader refuses them.
    func testOverlapsHolesAndTrailingBytes() throws {
        let data = [UInt8](repeating: 0, count: 32)
        let cases: [(String, [UInt8], [String])] = [
            ("{" + entry("a", "F32", "[4]", 0, 16) + "," + entry("b", "F32", "[4]", 8, 24) + "}", Array(data[0..<24]),
             ["tensor \"b\"", "[8, 24]", "overlap another tensor"]),
            ("{" + entry("a", "F32", "[8]", 0, 32) + "," + entry("b", "F32", "[4]", 0, 16) + "}", data,
             ["[0, 32]", "overlap another tensor"]),
            ("{" + entry("a", "F32", "[4]", 0, 16) + "," + entry("b", "F32", "[2]", 24, 32) + "}", data,
             ["tensor \"b\"", "leave bytes 16..<24 of the data unused"]),
            ("{" + entry("a", "F32", "[4]", 0, 16) + "}", data, ["ends at byte 16 of the 32 bytes", "trailing bytes"]),
            ("{}", [1], ["ends at byte 0 of the 1 bytes"]),
        ]
        for (i, (header, bytes, fragments)) in cases.enumerated() {
            let url = try file(rawSafetensors(header: header, data: bytes), name: "layout\(i).safetensors")
            assertThrowsMessage(try SafeTensorsFile(url: url), contains: [url.path] + fragments)
        }
        // zero-size tensors may sit anywhere in the sequence
        let empty = try file(rawSafetensors(header: "{" + entry("e", "F32", "[0]", 16, 16) + "," + entry("a", "F32", "[4]", 0, 16) + "}",
                                            data: Array(data[0..<16])), name: "empty.safetensors")
        XCTAssertEqual(try SafeTensorsFile(url: empty).tensor("a").data, [0, 0, 0, 0])
    }
}
