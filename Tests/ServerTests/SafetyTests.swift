import Foundation
import Imaging
import XCTest

/// Hostile requests: paths in every string field that could reach a file, broken and oversized
/// images and bodies, wrong methods. Each must be a 4xx naming the problem, quickly, without a
/// file outside the configured folders being read and without the server's paths in the reply.
final class SafetyTests: XCTestCase {
    nonisolated(unsafe) static var shared: TestServer?

    /// tiny-sd2 (a 256-pixel window) for the few requests that do run a job.
    var server: TestServer {
        get throws {
            if let s = Self.shared { return s }
            let s = try TestServer { $0.defaultModel = TestServer.fixtures.appendingPathComponent("models/tiny-sd2") }
            Self.shared = s
            return s
        }
    }

    typealias Reply = (status: Int, json: Any?, headers: [AnyHashable: Any])

    /// Asserts a client error that leaks nothing: no file's contents ("root:" of /etc/passwd), no
    /// server path (unless the request itself held it: messages may quote the field).
    private func assertRefused(_ r: Reply, _ what: String, status: Set<Int> = [], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue((400..<500).contains(r.status), "\(what): HTTP \(r.status) \(r.json ?? "")", file: file, line: line)
        if !status.isEmpty { XCTAssertTrue(status.contains(r.status), "\(what): HTTP \(r.status), wanted \(status.sorted())", file: file, line: line) }
        let text = "\(r.json ?? "")"
        for leak in ["root:", "/bin/", TestServer.fixtures.path, NSTemporaryDirectory()] where !what.contains(leak) {
            XCTAssertFalse(text.contains(leak), "\(what): the reply holds \(leak.debugDescription): \(text)", file: file, line: line)
        }
    }

    private func location(_ r: Reply) -> [String] {
        (((r.json as? [String: Any])?["detail"] as? [[String: Any]])?.first?["loc"] as? [String]) ?? []
    }

    func testPathsInStringFields() throws {
        let s = try server
        let paths = ["../../etc/passwd", "/etc/passwd", "tiny-sd2/../../x", "tiny-sd2/../tiny-sd1", "..", "~/x",
                     "file:///etc/passwd", TestServer.fixtures.appendingPathComponent("models/tiny-sd1").path]
        for path in paths {
            assertRefused(try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": path]), "sd_model_checkpoint \(path)", status: [404])
            assertRefused(try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": path]), "sampler_name \(path)", status: [404])
            assertRefused(try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_index": path]), "sampler_index \(path)", status: [404])
            assertRefused(try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": "Euler", "scheduler": path]),
                          "scheduler \(path)", status: [422])
            for field in ["panorama_window_weights", "panorama_timestep_spacing"] {
                assertRefused(try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", field: path]), "\(field) \(path)", status: [422])
            }
        }
        XCTAssertEqual(s.engine.currentModel?.title, "tiny-sd2", "no request switched the model")

        // LoRA tags name a file found by listing the LoRA folder, never a path
        for tag in ["<lora:../../x:1>", "<lora:/etc/passwd:1>", "<lyco:../lora/peft-attn:1>", "<lora:lora/../peft-attn>",
                    "<lora:\(TestServer.fixtures.appendingPathComponent("lora/peft-attn").path):1>", "<hypernet:../../x:1>"] {
            for field in ["prompt", "negative_prompt"] {
                var body: [String: Any] = ["prompt": "x", "steps": 1, "width": 256, "height": 256]
                body[field] = "a hill \(tag)"
                let r = try s.call("POST", "/sdapi/v1/txt2img", json: body)
                assertRefused(r, "\(field) \(tag)", status: [422])
                XCTAssertEqual(location(r), ["body", "prompt"], tag)
            }
        }

        // embeddings are words of the prompt matched against the embeddings folder's listing: a
        // path is plain text, rendered as such (no "TI hashes": no embedding file was used)
        let r = try s.call("POST", "/sdapi/v1/txt2img", json: [
            "prompt": "../x ../../etc/passwd /etc/passwd embeddings/../x", "negative_prompt": "../x", "steps": 1,
            "width": 256, "height": 256, "seed": 1,
        ])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        let info = ((r.json as? [String: Any])?["info"] as? String) ?? ""
        XCTAssertFalse(info.contains("TI hashes") || info.contains("root:"), info)
    }

    func testImagesThatAreNotBase64Images() throws {
        let s = try server
        let fixtureImage = try XCTUnwrap(FileManager.default.enumerator(atPath: TestServer.fixtures.appendingPathComponent("images").path)?
            .compactMap { $0 as? String }.first { $0.hasSuffix(".png") })
        let picture = try base64PNG(width: 256, height: 256) { x, y in [UInt8(x), UInt8(y), 9] }
        let valid = try XCTUnwrap(Data(base64Encoded: picture))
        let onePixel = try XCTUnwrap(Data(base64Encoded: try base64PNG(width: 1, height: 1) { _, _ in [0, 0, 0] }))
        // (text, words the 422's message has, whether png-info refuses it too: it reads only the
        // text chunks, so a PNG whose pixels are bad, or a JPEG, is a picture with no parameters)
        let notImages: [(String, String, Bool)] = [
            ("/etc/passwd", "base64", true), ("../../etc/passwd", "base64", true), ("file:///etc/passwd", "base64", true),
            ("data:image/png;base64,/etc/passwd", "base64", true), ("%%%", "base64", true), ("aGVsbG8", "base64", true),  // unpadded
            (TestServer.fixtures.appendingPathComponent("images/\(fixtureImage)").path, "base64", true),  // a real image's path
            (Data("root:x:0:0:root:/root:/bin/bash\n".utf8).base64EncodedString(), "PNG, JPEG or WebP", true),
            (Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).base64EncodedString(), "PNG, JPEG or WebP", true),
            (valid.prefix(valid.count / 2).base64EncodedString(), "truncated", true),
            (valid.prefix(40).base64EncodedString(), "truncated", true),  // the header only
            (Self.pngClaiming(width: 100_000, height: 100_000, from: onePixel).base64EncodedString(), "larger", false),
            (Self.pngClaiming(width: 0x7FFF_FFFF, height: 1, from: onePixel).base64EncodedString(), "", false),
            (Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).base64EncodedString(), "", false),  // a JPEG's first bytes
            (Data("RIFF\u{10}\0\0\0WEBPVP8 ".utf8).base64EncodedString(), "", false),  // a WebP's
            ("", "", true),
        ]
        for (text, message, pngInfoRefuses) in notImages {
            let start = Date()
            for (field, body) in [("init_images", ["prompt": "x", "init_images": [text], "steps": 1] as [String: Any]),
                                  ("mask", ["prompt": "x", "init_images": [picture], "mask": text, "steps": 1, "width": 256, "height": 256])] {
                if field == "mask" && text.isEmpty { continue }  // an empty mask is no mask
                let r = try s.call("POST", "/sdapi/v1/img2img", json: body)
                assertRefused(r, "\(field) \(text.prefix(60))", status: [422])
                XCTAssertEqual(location(r), ["body", field], "\(field) \(text.prefix(60))")
                let problem = (((r.json as? [String: Any])?["detail"] as? [[String: Any]])?.first?["msg"] as? String) ?? ""
                XCTAssertTrue(message.isEmpty || problem.contains(message), "\(field) \(text.prefix(60)): \(problem)")
            }
            let r = try s.call("POST", "/sdapi/v1/png-info", json: ["image": text])
            if pngInfoRefuses {
                assertRefused(r, "png-info \(text.prefix(60))", status: [422])
                XCTAssertEqual(location(r), ["body", "image"], "png-info \(text.prefix(60))")
            } else {
                XCTAssertEqual(r.status, 200, "png-info \(text.prefix(60)): \(r.json ?? "")")
                XCTAssertEqual((r.json as? [String: Any])?["info"] as? String, "")
            }
            XCTAssertLessThan(Date().timeIntervalSince(start), 2, "refused quickly: \(text.prefix(60))")
        }
    }

    func testMalformedBodies() throws {
        let s = try server
        let endpoints = ["/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/options", "/sdapi/v1/png-info"]
        for path in endpoints {
            // (a byte order mark before the JSON is not malformed: Starlette's json.loads takes it too)
            for body in ["{\"prompt\": ", "[1, 2]", "\"a string\"", "null", "42", "true", "", "{\"prompt\": \"x\"}}",
                         "{'prompt': 'x'}"] {
                let r = try s.call("POST", path, body: Data(body.utf8))
                assertRefused(r, "\(path) \(body.debugDescription)", status: [422])
                XCTAssertEqual(location(r).first, "body", "\(path) \(body.debugDescription)")
            }
            let invalid = Data([0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D])  // {"\xff\xfe":1}: not UTF-8
            assertRefused(try s.call("POST", path, body: invalid), "\(path) invalid UTF-8", status: [422])
        }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        assertRefused(try s.call("POST", "/sdapi/v1/txt2img", body: Data(deep.utf8)), "deeply nested JSON", status: [422])
        XCTAssertEqual(try s.call("GET", "/sdapi/v1/progress").status, 200, "the server goes on")
    }

    func testOversizedBodiesAndLongPrompts() throws {
        let s = try TestServer {
            $0.defaultModel = TestServer.fixtures.appendingPathComponent("models/tiny-sd2")
            $0.maxBodyBytes = 2 << 20
        }
        // over the cap: by Content-Length, and in chunks with no length given
        assertRefused(try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": String(repeating: "x", count: 3 << 20)]), "3 MiB body", status: [413])
        let connection = try HTTPConnection(port: s.port)
        var chunked = Array("POST /sdapi/v1/img2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        let piece = Array(String(repeating: "a", count: 1 << 16).utf8)
        for _ in 0..<40 { chunked += Array("\(String(piece.count, radix: 16))\r\n".utf8) + piece + Array("\r\n".utf8) }
        chunked += Array("0\r\n\r\n".utf8)
        let reply = try connection.sendRaw(chunked)
        XCTAssertEqual(reply.status, 413, String(decoding: reply.body, as: UTF8.self))
        let lying = try HTTPConnection(port: s.port).sendRaw(Array(
            "POST /sdapi/v1/png-info HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{}".utf8))
        XCTAssertEqual(lying.status, 413, "a Content-Length over the cap is refused before reading")

        // a 1 MB prompt within the cap: answered (refused or rendered), and the server goes on
        let start = Date()
        let long = try s.call("POST", "/sdapi/v1/txt2img", json: [
            "prompt": String(repeating: "a red hill, ", count: 1 << 20 / 12), "steps": 1, "width": 256, "height": 256,
        ], timeout: 300)
        print("1 MB prompt: HTTP \(long.status) in \(String(format: "%.1f", Date().timeIntervalSince(start))) s: \("\(long.json ?? "")".prefix(300))")
        XCTAssertTrue([200, 413, 422].contains(long.status), "1 MB prompt: HTTP \(long.status) \(long.json ?? "")")
        XCTAssertEqual(try s.call("GET", "/sdapi/v1/progress").status, 200)
    }

    func testWrongMethodsAndPaths() throws {
        let s = try server
        let wrong: [(String, String)] = [
            ("GET", "/sdapi/v1/txt2img"), ("GET", "/sdapi/v1/img2img"), ("PUT", "/sdapi/v1/options"),
            ("DELETE", "/sdapi/v1/options"), ("POST", "/sdapi/v1/sd-models"), ("POST", "/sdapi/v1/progress"),
            ("GET", "/sdapi/v1/interrupt"), ("GET", "/sdapi/v1/png-info"), ("PATCH", "/sdapi/v1/txt2img"),
            ("GET", "/sdapi/v1/../../etc/passwd"), ("GET", "/%2e%2e/%2e%2e/etc/passwd"), ("GET", "/sdapi/v1/%2e%2e/%2e%2e/etc/passwd"),
            ("GET", "/etc/passwd"), ("GET", "/sdapi/v1/sd-models/..%2f..%2fetc%2fpasswd"),
        ]
        for (method, path) in wrong {
            assertRefused(try s.call(method, path, json: method == "GET" ? nil : [String: Any]()), "\(method) \(path)", status: [404, 405])
        }
        XCTAssertEqual(try s.call("GET", "/sdapi/v1/progress").status, 200)
    }

    /// A copy of the PNG `valid` whose IHDR claims `width` x `height` (with a correct CRC, so
    /// only the size is wrong).
    static func pngClaiming(width: UInt32, height: UInt32, from valid: Data) -> Data {
        var bytes = [UInt8](valid)
        // signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), …, CRC after 13 bytes of data
        for (offset, value) in [(16, width), (20, height)] {
            for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i))) }
        }
        let crc = crc32(bytes[12..<29])
        for i in 0..<4 { bytes[29 + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * UInt32(i))) }
        return Data(bytes)
    }

    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
