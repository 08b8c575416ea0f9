import Foundation
import Server
import Weights
import XCTest

/// AUTOMATIC1111's own Python client (`webuiapi` from PyPI, unchanged) against the server: the
/// calls its users make, with the fields it sends and reads (`Python/a1111_client_check.py`).
final class A1111ClientTests: XCTestCase {
    func testWebUIApiClient() throws {
        try PythonScript.requireModules(["webuiapi", "PIL"])
        // tiny-sd2's 256-pixel window keeps the panorama and the img2img runs small
        let model = TestServer.fixtures.appendingPathComponent("models/tiny-sd2")
        let open = try TestServer { $0.defaultModel = model }
        let locked = try TestServer {
            $0.defaultModel = model
            $0.apiAuth = "alice:secret"
        }
        let start = Date()
        let run = try PythonScript.run(script: "a1111_client_check.py",
                                       arguments: ["--port", String(open.port), "--auth-port", String(locked.port),
                                                   "--window", "256"],
                                       timeout: 240)
        print(run.output)
        print("a1111_client_check.py: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(run.status, 0, "a1111_client_check.py failed:\n\(run.output)")
    }

    /// Base64 wrapped in lines (MIME encoders, `base64` on the command line) is taken, as
    /// A1111's b64decode takes it; other characters are not.
    func testWrappedBase64() throws {
        let s = try TestServer { $0.defaultModel = TestServer.fixtures.appendingPathComponent("models/tiny-sd2") }
        let picture = try base64PNG(width: 256, height: 256, text: [(key: "parameters", value: "a hill\nSteps: 3")]) { x, y in
            [UInt8(x), UInt8(y), 50]
        }
        let wrapped = Data(base64Encoded: picture)!.base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
        XCTAssertTrue(wrapped.contains("\r\n"))
        var r = try s.call("POST", "/sdapi/v1/png-info", json: ["image": "data:image/png;base64," + wrapped])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        XCTAssertEqual((r.json as? [String: Any])?["info"] as? String, "a hill\nSteps: 3")
        r = try s.call("POST", "/sdapi/v1/img2img", json: ["prompt": "x", "init_images": [" " + wrapped + "\n"], "steps": 1, "seed": 1,
                                                         "width": 256, "height": 256, "denoising_strength": 0.5])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        let spaced = picture.prefix(8) + "!" + picture.dropFirst(8)
        r = try s.call("POST", "/sdapi/v1/png-info", json: ["image": spaced])
        XCTAssertEqual(r.status, 422)
    }
}

/// `hash` and `sha256` of `/sdapi/v1/sd-models` (see `ModelCatalog.hashes(of:)`).
final class ModelHashTests: XCTestCase {
    // sha256("abc") and sha256("abd"): FIPS 180-2's test vector and its neighbour
    static let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    func testSingleFilesFoldersAndTheCache() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-hashes-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let unet = folder.appendingPathComponent("folder-model/unet")
        try FileManager.default.createDirectory(at: unet, withIntermediateDirectories: true)
        let file = folder.appendingPathComponent("single.safetensors")
        try Data("abc".utf8).write(to: file)
        try Data("unet weights".utf8).write(to: unet.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        let cache = HashCache(url: folder.appendingPathComponent("cache/hashes.json"))

        let catalog = ModelCatalog(defaultModel: nil, modelsDirectory: folder, hashCache: cache)
        let single = try XCTUnwrap(catalog.entry(named: "single"))
        XCTAssertEqual(catalog.hashes(of: single).sha256, Self.abc)
        XCTAssertEqual(catalog.hashes(of: single).hash, String(Self.abc.prefix(10)))
        let diffusers = try XCTUnwrap(catalog.entry(named: "folder-model"))
        let folderHash = try FileHash.modelHash(ofModelAt: diffusers.url, cache: nil)
        XCTAssertNotNil(folderHash)
        XCTAssertEqual(catalog.hashes(of: diffusers).hash, folderHash, "a folder's hash is its Model hash")
        XCTAssertNil(catalog.hashes(of: diffusers).sha256, "no single file to give the sha256 of")

        // kept per file with its size and modification time: the same size and time is not read
        // again (so the stale "abc" shows), a new time is
        let time = Date(timeIntervalSince1970: 1_000_000_000)
        try FileManager.default.setAttributes([.modificationDate: time], ofItemAtPath: file.path)
        XCTAssertEqual(catalog.hashes(of: single).sha256, Self.abc)
        try Data("abd".utf8).write(to: file)
        try FileManager.default.setAttributes([.modificationDate: time], ofItemAtPath: file.path)
        XCTAssertEqual(catalog.hashes(of: single).sha256, Self.abc, "not hashed again while size and time are the same")
        try FileManager.default.setAttributes([.modificationDate: time.addingTimeInterval(1)], ofItemAtPath: file.path)
        XCTAssertEqual(catalog.hashes(of: single).sha256, try FileHash.sha256(of: file, cache: nil))
        XCTAssertNotEqual(catalog.hashes(of: single).sha256, Self.abc)

        // a file too large to hash on a GET: nil until something (loading the model) has hashed it
        let lazy = ModelCatalog(defaultModel: nil, modelsDirectory: folder,
                                hashCache: HashCache(url: folder.appendingPathComponent("other-cache.json")), eagerHashBytes: 2)
        let large = try XCTUnwrap(lazy.entry(named: "single"))
        XCTAssertNil(lazy.hashes(of: large).hash)
        XCTAssertNil(lazy.hashes(of: large).sha256)
        let computed = try FileHash.sha256(of: file, cache: HashCache(url: folder.appendingPathComponent("other-cache.json")))
        XCTAssertEqual(lazy.hashes(of: large).sha256, computed, "found in the hash cache once computed")
        XCTAssertEqual(lazy.hashes(of: large).hash, String(computed.prefix(10)))
    }

    func testListing() throws {
        let s = try TestServer()
        let start = Date()
        let models = try XCTUnwrap(try s.call("GET", "/sdapi/v1/sd-models").json as? [[String: Any]])
        let first = Date().timeIntervalSince(start)
        let again = Date()
        XCTAssertEqual(try s.call("GET", "/sdapi/v1/sd-models").status, 200)
        print("sd-models: first listing \(String(format: "%.3f", first)) s, then \(String(format: "%.3f", Date().timeIntervalSince(again))) s")
        for model in models {
            let title = try XCTUnwrap(model["title"] as? String)
            let url = TestServer.fixtures.appendingPathComponent("models/\(title)")
            XCTAssertEqual(model["hash"] as? String, try FileHash.modelHash(ofModelAt: url, cache: nil), title)
            XCTAssertTrue(model["sha256"] is NSNull, "\(title) is a folder")
        }
        let catalog = ModelCatalog(defaultModel: nil, modelsDirectory: TestServer.fixtures.appendingPathComponent("models/single-file"))
        let single = try XCTUnwrap(catalog.entry(named: "tiny-sd1"))
        XCTAssertEqual(catalog.hashes(of: single).sha256, try FileHash.sha256(of: single.url, cache: nil))
    }
}
