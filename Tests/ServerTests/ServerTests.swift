import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Imaging
import Renderer
import Server
import XCTest

/// A server on an ephemeral loopback port with the tiny test model, for the whole test run.
final class TestServer: @unchecked Sendable {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    let engine: Engine
    let port: Int
    let outputs: URL
    private let task: Task<Void, Error>

    init(_ adjust: (inout ServerConfiguration) -> Void = { _ in }) throws {
        var configuration = ServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.defaultModel = Self.fixtures.appendingPathComponent("models/tiny-pano")
        configuration.modelsDirectory = Self.fixtures.appendingPathComponent("models")
        configuration.tokenizer = Self.fixtures.appendingPathComponent("models/tiny-pano/tokenizer")
        configuration.loraDirectory = Self.fixtures.appendingPathComponent("lora")
        configuration.embeddingsDirectory = Self.fixtures.appendingPathComponent("golden/prompts/embeddings")
        outputs = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-serve-\(UUID().uuidString)")
        configuration.outputs = outputs
        // each test's server is stopped by cancelling its task, which HummingbirdCore logs as errors
        configuration.logLevel = .critical
        adjust(&configuration)
        engine = try Engine(configuration: configuration)
        let server = PanoramaServer(engine: engine)
        let ready = DispatchSemaphore(value: 0)
        let bound = PortBox()
        task = Task.detached {
            try await server.run { port in
                bound.port = port
                ready.signal()
            }
        }
        guard ready.wait(timeout: .now() + 30) == .success, let port = bound.port else {
            throw NSError(domain: "TestServer", code: 1, userInfo: [NSLocalizedDescriptionKey: "the server did not start"])
        }
        self.port = port
    }

    deinit { task.cancel() }

    /// Sends a request and returns the status and the JSON body (nil when it is not JSON).
    func call(_ method: String, _ path: String, json: Any? = nil, body: Data? = nil, headers: [String: String] = [:],
              timeout: TimeInterval = 120) throws -> (status: Int, json: Any?, headers: [AnyHashable: Any]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = timeout
        if let json {
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let body {
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        for (key, value) in headers { request.setValue(value, forHTTPHeaderField: key) }
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { data, response, error in
            box.value = (data, response as? HTTPURLResponse, error)
            done.signal()
        }.resume()
        done.wait()
        guard let (data, response, error) = box.value, let response else {
            throw box.value?.2 ?? NSError(domain: "TestServer", code: 2)
        }
        _ = error
        let object = data.flatMap { try? JSONSerialization.jsonObject(with: $0, options: [.fragmentsAllowed]) }
        return (response.statusCode, object, response.allHeaderFields)
    }
}

private final class PortBox: @unchecked Sendable { var port: Int? }
private final class ResultBox: @unchecked Sendable { var value: (Data?, HTTPURLResponse?, Error?)? }

/// A 64x64... picture as a base64 PNG.
func base64PNG(width: Int, height: Int, text: [(key: String, value: String)] = [], pixel: (Int, Int) -> [UInt8]) throws -> String {
    var pixels: [UInt8] = []
    for y in 0..<height { for x in 0..<width { pixels += pixel(x, y) } }
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-serve-\(UUID().uuidString).png")
    defer { try? FileManager.default.removeItem(at: url) }
    try PNG.write(RGBImage(width: width, height: height, pixels: pixels), to: url, text: text)
    return try Data(contentsOf: url).base64EncodedString()
}

final class ServerTests: XCTestCase {
    nonisolated(unsafe) static var shared: TestServer?

    var server: TestServer {
        get throws {
            if let s = Self.shared { return s }
            let s = try TestServer()
            Self.shared = s
            return s
        }
    }

    /// Requests no route takes get FastAPI's JSON: 404 for an unknown path, 405 for another
    /// method on a known one (A1111 clients decode every answer).
    func testUnknownRoutesAnswerJSON() throws {
        let s = try server
        var r = try s.call("GET", "/sdapi/v1/cmd-flags")
        XCTAssertEqual(r.status, 404)
        XCTAssertEqual((r.json as? [String: String])?["detail"], "Not Found")
        r = try s.call("GET", "/sdapi/v1/txt2img")
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual((r.json as? [String: String])?["detail"], "Method Not Allowed")
        r = try s.call("DELETE", "/sdapi/v1/options")
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual(try s.call("POST", "/sdapi/v1/skip").status, 200, "skip with nothing running is a no-op")
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "override_settings": ["sd_model_checkpoint": "../../etc/passwd"]])
        XCTAssertEqual(r.status, 404)
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "override_settings": ["sd_model_checkpoint": 5.5]])
        XCTAssertEqual(r.status, 404, "a number is read as a name, as pydantic reads it")
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "override_settings": ["sd_model_checkpoint": ["x"]]])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual((((r.json as? [String: Any])?["detail"] as? [[String: Any]])?.first?["loc"] as? [String]),
                       ["body", "override_settings", "sd_model_checkpoint"])
    }

    func testListings() throws {
        let s = try server
        let models = try s.call("GET", "/sdapi/v1/sd-models")
        XCTAssertEqual(models.status, 200)
        let titles = (models.json as? [[String: Any]])?.compactMap { $0["title"] as? String } ?? []
        XCTAssertEqual(titles.first, "tiny-pano")
        XCTAssertTrue(titles.contains("tiny-sd1"), "\(titles)")
        XCTAssertFalse(titles.contains("single-file"), "a folder without unet/ is not a model: \(titles)")

        let samplers = try s.call("GET", "/sdapi/v1/samplers")
        XCTAssertEqual((samplers.json as? [[String: Any]])?.compactMap { $0["name"] as? String },
                       ["DPM++ 2M", "Euler a", "Euler", "DDIM", "LCM", "TCD"])
        let schedulers = try s.call("GET", "/sdapi/v1/schedulers")
        XCTAssertEqual((schedulers.json as? [[String: Any]])?.compactMap { $0["label"] as? String },
                       ["Automatic", "Uniform", "Karras", "SGM Uniform"])
        let loras = try s.call("GET", "/sdapi/v1/loras")
        XCTAssertEqual(Set((loras.json as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []),
                       ["kohya-locon", "kohya-te", "peft-attn"])
        XCTAssertFalse("\(loras.json ?? "")".contains(TestServer.fixtures.path), "no server paths in listings")
        let embeddings = try s.call("GET", "/sdapi/v1/embeddings")
        XCTAssertEqual(embeddings.status, 200)
        XCTAssertNotNil((embeddings.json as? [String: Any])?["loaded"] as? [String: Any])
        let options = try s.call("GET", "/sdapi/v1/options")
        XCTAssertEqual((options.json as? [String: Any])?["sd_model_checkpoint"] as? String, "tiny-pano")
        let progress = try s.call("GET", "/sdapi/v1/progress")
        let state = (progress.json as? [String: Any])?["state"] as? [String: Any]
        XCTAssertEqual(state?["job_count"] as? Int, 0)
        XCTAssertNotNil((progress.json as? [String: Any])?["eta_relative"])
        XCTAssertEqual(try s.call("GET", "/sdapi/v1/nothing-here").status, 404)
    }

    func testTxt2imgPanoramaBatchAndPNGInfo() throws {
        let s = try server
        let start = Date()
        let r = try s.call("POST", "/sdapi/v1/txt2img", json: [
            "prompt": "a quiet lake", "negative_prompt": "fog", "steps": 2, "width": 640, "height": 512,
            "sampler_name": "DDIM", "seed": 42, "n_iter": 2, "batch_size": 1, "cfg_scale": 7, "panorama_stride": 16,
            "restore_faces": false, "override_settings": [String: Any](),
        ])
        print("txt2img 640x512 DDIM 2 steps x 2 images: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        let body = try XCTUnwrap(r.json as? [String: Any])
        let images = try XCTUnwrap(body["images"] as? [String])
        XCTAssertEqual(images.count, 2)
        let infoText = try XCTUnwrap(body["info"] as? String)
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(infoText.utf8)) as? [String: Any])
        XCTAssertEqual(info["seed"] as? Int, 42)
        XCTAssertEqual(info["all_seeds"] as? [Int], [42, 43])
        XCTAssertEqual(info["width"] as? Int, 640)
        XCTAssertEqual(info["sampler_name"] as? String, "DDIM")
        XCTAssertEqual(info["steps"] as? Int, 2)
        XCTAssertEqual((info["all_prompts"] as? [String])?.count, 2)
        let infotexts = try XCTUnwrap(info["infotexts"] as? [String])
        XCTAssertTrue(infotexts[0].contains("Steps: 2, Sampler: DDIM, CFG scale: 7.0, Seed: 42, Size: 640x512"), infotexts[0])
        XCTAssertTrue(infotexts[0].contains("MultiDiffusion stride: 16"), infotexts[0])
        XCTAssertEqual((body["parameters"] as? [String: Any])?["prompt"] as? String, "a quiet lake")

        let picture = try ImageFile.read(data: try XCTUnwrap(Data(base64Encoded: images[1])))
        XCTAssertEqual([picture.width, picture.height], [640, 512])
        let written = try FileManager.default.contentsOfDirectory(atPath: s.outputs.path).filter { $0.hasSuffix("-43.png") }
        XCTAssertEqual(written.count, 1, "each image is written into --outputs")

        let info2 = try s.call("POST", "/sdapi/v1/png-info", json: ["image": "data:image/png;base64," + images[0]])
        XCTAssertEqual(info2.status, 200)
        let pngInfo = try XCTUnwrap(info2.json as? [String: Any])
        XCTAssertEqual(pngInfo["info"] as? String, infotexts[0])
        let parameters = try XCTUnwrap(pngInfo["parameters"] as? [String: String])
        XCTAssertEqual(parameters["Prompt"], "a quiet lake")
        XCTAssertEqual(parameters["Negative prompt"], "fog")
        XCTAssertEqual(parameters["Size-1"], "640")
        XCTAssertEqual(parameters["Seed"], "42")
    }

    func testBadInputs() throws {
        let s = try server
        func detail(_ r: (status: Int, json: Any?, headers: [AnyHashable: Any])) -> [[String: Any]] {
            ((r.json as? [String: Any])?["detail"] as? [[String: Any]]) ?? []
        }
        var r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "steps": "many"])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(detail(r).first?["loc"] as? [String], ["body", "steps"])
        XCTAssertEqual(detail(r).first?["type"] as? String, "type_error.integer")

        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": ["not", "text"], "cfg_scale": "high", "width": 1.5])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(Set(detail(r).compactMap { ($0["loc"] as? [String])?.last }), ["prompt", "cfg_scale", "width"])

        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": "Heun"])
        XCTAssertEqual(r.status, 404)
        XCTAssertEqual((r.json as? [String: Any])?["detail"] as? String, "Sampler not found")

        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": "Euler", "scheduler": "Karras"])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(detail(r).first?["loc"] as? [String], ["body", "scheduler"])

        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "width": 100_000, "height": 512])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(detail(r).first?["loc"] as? [String], ["body", "width"])
        XCTAssertTrue("\(detail(r).first?["msg"] ?? "")".contains("16384"))

        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "width": 16384, "height": 8192])
        XCTAssertEqual(r.status, 422, "over the megapixel cap")

        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "width": 516])
        XCTAssertEqual(r.status, 422)
        XCTAssertTrue("\(detail(r).first?["msg"] ?? "")".contains("multiple of 8"))

        r = try s.call("POST", "/sdapi/v1/txt2img", body: Data("{\"prompt\": ".utf8))
        XCTAssertEqual(r.status, 422)
        r = try s.call("POST", "/sdapi/v1/txt2img", body: Data("[1, 2]".utf8))
        XCTAssertEqual(r.status, 422)

        r = try s.call("POST", "/sdapi/v1/img2img", json: ["prompt": "x", "init_images": ["%%% not base64 %%%"]])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(detail(r).first?["loc"] as? [String], ["body", "init_images"])
        r = try s.call("POST", "/sdapi/v1/img2img", json: ["prompt": "x", "init_images": [Data("hello, not an image".utf8).base64EncodedString()]])
        XCTAssertEqual(r.status, 422)
        XCTAssertTrue("\(detail(r).first?["msg"] ?? "")".contains("not a PNG, JPEG or WebP"), "\(r.json ?? "")")
        r = try s.call("POST", "/sdapi/v1/img2img", json: ["prompt": "x", "init_images": [String]()])
        XCTAssertEqual(r.status, 422)
        r = try s.call("POST", "/sdapi/v1/png-info", json: ["image": "@@@"])
        XCTAssertEqual(r.status, 422)

        // path traversal: names are looked up in listings, never joined as paths
        for name in ["../../etc/passwd", "/etc/passwd", "tiny-pano/../../../etc", "..", "."] {
            r = try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": name])
            XCTAssertEqual(r.status, 404, name)
        }
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": "../../etc/passwd"])
        XCTAssertEqual(r.status, 404)
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": "DDIM", "scheduler": "../../etc/passwd"])
        XCTAssertEqual(r.status, 422)
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_window_weights": "../../etc/passwd"])
        XCTAssertEqual(r.status, 422)
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_timestep_spacing": "/etc/passwd"])
        XCTAssertEqual(r.status, 422)
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "height": 256])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(detail(r).first?["loc"] as? [String], ["body", "height"], "smaller than the model's window")
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x <lora:../../etc/passwd:1>", "steps": 1])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(detail(r).first?["loc"] as? [String], ["body", "prompt"])
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x <lora:/etc/passwd>", "steps": 1])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(s.engine.currentModel?.title, "tiny-pano")
    }

    func testImg2imgAndInpaint() throws {
        let s = try server
        let picture = try base64PNG(width: 256, height: 128) { x, y in [UInt8(x), UInt8(y * 2), 128] }
        var r = try s.call("POST", "/sdapi/v1/img2img", json: [
            "prompt": "a field", "init_images": [picture], "denoising_strength": 0.5, "steps": 4,
            "sampler_name": "DDIM", "seed": 7, "width": 512, "height": 512,
        ])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        var info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(((r.json as? [String: Any])?["info"] as? String ?? "").utf8)) as? [String: Any])
        XCTAssertEqual(info["denoising_strength"] as? Double, 0.5)
        XCTAssertTrue((info["infotexts"] as? [String])?.first?.contains("Denoising strength: 0.5") == true)

        // the left half repainted, the right half kept exactly (mask blur 0)
        let mask = try base64PNG(width: 512, height: 512) { x, _ in x < 256 ? [255, 255, 255] : [0, 0, 0] }
        let source = try base64PNG(width: 512, height: 512) { _, _ in [200, 30, 40] }
        r = try s.call("POST", "/sdapi/v1/img2img", json: [
            "prompt": "a field", "init_images": [source], "mask": mask, "mask_blur": 0, "denoising_strength": 1,
            "steps": 2, "sampler_name": "DDIM", "seed": 7,
        ])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        let image = try ImageFile.read(data: Data(base64Encoded: ((r.json as? [String: Any])?["images"] as? [String])?.first ?? "")!)
        XCTAssertEqual(Array(image.pixels[(100 * 512 + 400) * 3..<(100 * 512 + 400) * 3 + 3]), [200, 30, 40])
        info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(((r.json as? [String: Any])?["info"] as? String ?? "").utf8)) as? [String: Any])
        XCTAssertTrue((info["infotexts"] as? [String])?.first?.contains("Mask blur: 0") == true)

        // inverted: the mask's black part is repainted; an all-black inverted mask has nothing to keep
        let white = try base64PNG(width: 512, height: 512) { _, _ in [255, 255, 255] }
        r = try s.call("POST", "/sdapi/v1/img2img", json: ["prompt": "x", "init_images": [source], "mask": white,
                                                         "inpainting_mask_invert": 1, "steps": 1])
        XCTAssertEqual(r.status, 422)
    }

    func testModelSwitch() throws {
        let s = try server
        var r = try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": "tiny-sd1.safetensors", "samples_format": "png"])
        XCTAssertEqual(r.status, 404, "single files are listed only directly inside --models-dir")
        r = try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": "tiny-sd1"])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        XCTAssertEqual((try s.call("GET", "/sdapi/v1/options").json as? [String: Any])?["sd_model_checkpoint"] as? String, "tiny-sd1")
        r = try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": "tiny-pano"])
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(s.engine.currentModel?.title, "tiny-pano")
        r = try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": 12])
        XCTAssertEqual(r.status, 404)
        r = try s.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": ["a"]])
        XCTAssertEqual(r.status, 422)
    }

    func testSingleFileListing() {
        let catalog = ModelCatalog(defaultModel: nil, modelsDirectory: TestServer.fixtures.appendingPathComponent("models/single-file"))
        XCTAssertTrue(catalog.entries.map(\.title).contains("tiny-sd1.safetensors"), "\(catalog.entries.map(\.title))")
        XCTAssertFalse(catalog.entries.map(\.title).contains { $0.hasSuffix(".json") }, "only .safetensors and .ckpt files")
        XCTAssertEqual(catalog.entry(named: "tiny-sd1")?.isSingleFile, true)
        XCTAssertEqual(catalog.entry(named: "tiny-sd1.safetensors [0123456789]")?.modelName, "tiny-sd1")
        XCTAssertNil(catalog.entry(named: "../single-file/tiny-sd1.safetensors"))
    }

    func testSafetyDefaults() throws {
        XCTAssertThrowsError(try PanoramaServer.checkExposure(host: "0.0.0.0", apiAuth: nil, insecure: false))
        XCTAssertThrowsError(try PanoramaServer.checkExposure(host: "192.168.1.2", apiAuth: nil, insecure: false))
        XCTAssertNoThrow(try PanoramaServer.checkExposure(host: "0.0.0.0", apiAuth: "a:b", insecure: false))
        XCTAssertNoThrow(try PanoramaServer.checkExposure(host: "0.0.0.0", apiAuth: nil, insecure: true))
        XCTAssertNoThrow(try PanoramaServer.checkExposure(host: "127.0.0.1", apiAuth: nil, insecure: false))
        XCTAssertNoThrow(try PanoramaServer.checkExposure(host: "localhost", apiAuth: nil, insecure: false))
        XCTAssertThrowsError(try PanoramaServer.checkExposure(host: "127.0.0.1", apiAuth: "nopassword", insecure: false))
    }

    func testAuthAndBodyCap() throws {
        let s = try TestServer { c in
            c.apiAuth = "alice:s3cret"
            c.maxBodyBytes = 1 << 20
        }
        var r = try s.call("GET", "/sdapi/v1/samplers")
        XCTAssertEqual(r.status, 401)
        XCTAssertEqual((r.json as? [String: Any])?["detail"] as? String, "Incorrect username or password")
        let wrong = "Basic " + Data("alice:wrong".utf8).base64EncodedString()
        r = try s.call("GET", "/sdapi/v1/samplers", headers: ["Authorization": wrong])
        XCTAssertEqual(r.status, 401)
        let right = "Basic " + Data("alice:s3cret".utf8).base64EncodedString()
        r = try s.call("GET", "/sdapi/v1/samplers", headers: ["Authorization": right])
        XCTAssertEqual(r.status, 200)
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": String(repeating: "x", count: 2 << 20)], headers: ["Authorization": right])
        XCTAssertEqual(r.status, 413)
        r = try s.call("GET", "/sdapi/v1/progress", headers: ["Authorization": right])
        XCTAssertEqual(r.status, 200, "the server goes on after an oversized body")
    }

    /// A long job is interrupted between steps and still answers; the queue's bound gives 429;
    /// a client that goes away mid-job leaves the server working.
    func testQueueInterruptProgressAndDisconnect() throws {
        let s = try TestServer { $0.queueSize = 1 }
        let long: [String: Any] = ["prompt": "a long job", "steps": 500, "sampler_name": "DDIM", "seed": 1, "width": 512, "height": 512]
        let longBody = try JSONSerialization.data(withJSONObject: long)
        let first = ResultBox2(), second = ResultBox2()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { first.value = try? s.call("POST", "/sdapi/v1/txt2img", body: longBody); group.leave() }
        // wait until it is sampling
        var state: [String: Any] = [:]
        for _ in 0..<300 {
            let p = try s.call("GET", "/sdapi/v1/progress")
            state = ((p.json as? [String: Any])?["state"] as? [String: Any]) ?? [:]
            if (state["sampling_step"] as? Int ?? 0) > 0 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertGreaterThan(state["sampling_step"] as? Int ?? 0, 0)
        XCTAssertEqual(state["sampling_steps"] as? Int, 500)
        let progress = try s.call("GET", "/sdapi/v1/progress").json as? [String: Any]
        XCTAssertGreaterThan(progress?["progress"] as? Double ?? 0, 0)
        // the live preview of the canvas, at the picture's size, unless skipped
        let current = try XCTUnwrap((progress?["current_image"] as? String).flatMap { Data(base64Encoded: $0) })
        let preview = try ImageFile.read(data: current, name: "current_image")
        XCTAssertEqual([preview.width, preview.height], [512, 512])
        let skipped = try s.call("GET", "/sdapi/v1/progress?skip_current_image=true").json as? [String: Any]
        XCTAssertTrue(skipped?["current_image"] is NSNull, "\(String(describing: skipped?["current_image"]))")

        group.enter()
        DispatchQueue.global().async {
            second.value = try? s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "queued", "steps": 1, "sampler_name": "DDIM"])
            group.leave()
        }
        var queued = 0
        for _ in 0..<100 {
            queued = (((try s.call("GET", "/sdapi/v1/progress").json as? [String: Any])?["state"] as? [String: Any])?["job_count"] as? Int) ?? 0
            if queued == 2 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertEqual(queued, 2)
        let third = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "one too many", "steps": 1])
        XCTAssertEqual(third.status, 429)

        XCTAssertEqual(try s.call("POST", "/sdapi/v1/interrupt").status, 200)
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(first.value?.status, 200, "an interrupted job returns its picture so far")
        XCTAssertEqual((first.value?.json as? [String: Any]).flatMap { ($0["images"] as? [String])?.count }, 1)
        XCTAssertEqual(second.value?.status, 200, "the queued job runs after the interrupt")

        // a client that disconnects mid-job
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(s.port)/sdapi/v1/txt2img")!)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: long)
        let task = URLSession.shared.dataTask(with: request) { _, _, _ in }
        task.resume()
        for _ in 0..<300 {
            let p = try s.call("GET", "/sdapi/v1/progress")
            if ((p.json as? [String: Any])?["state"] as? [String: Any])?["sampling_step"] as? Int ?? 0 > 0 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        task.cancel()
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertEqual(try s.call("POST", "/sdapi/v1/interrupt").status, 200)
        let after = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "after", "steps": 1, "sampler_name": "DDIM"])
        XCTAssertEqual(after.status, 200)
    }
}

private final class ResultBox2: @unchecked Sendable {
    var value: (status: Int, json: Any?, headers: [AnyHashable: Any])?
}
