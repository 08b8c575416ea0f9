import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Imaging
import Server
import XCTest

/// The studio's own endpoints (`/panorama/v1`): config, token counter, asynchronous jobs with
/// cancel, the gallery, and region prompts (also through txt2img).
final class StudioAPITests: XCTestCase {
    nonisolated(unsafe) static var shared: TestServer?

    var server: TestServer {
        get throws {
            if let s = Self.shared { return s }
            let s = try TestServer { $0.queueSize = 4 }
            Self.shared = s
            return s
        }
    }

    func testConfig() throws {
        let r = try server.call("GET", "/panorama/v1/config")
        XCTAssertEqual(r.status, 200)
        let config = try XCTUnwrap(r.json as? [String: Any])
        XCTAssertEqual(config["model"] as? String, "tiny-pano")
        XCTAssertEqual(config["window"] as? Int, 512)
        XCTAssertEqual(config["vae_scale"] as? Int, 8)
        XCTAssertEqual(config["samplers"] as? [String], ["DPM++ 2M", "Euler a", "Euler", "DDIM", "LCM", "TCD"])
        XCTAssertEqual(Set(config["loras"] as? [String] ?? []), ["kohya-locon", "kohya-te", "peft-attn"])
        XCTAssertTrue((config["embeddings"] as? [String] ?? []).contains("tinyemb"))
        XCTAssertEqual((config["limits"] as? [String: Any])?["max_side"] as? Int, 16384)
        XCTAssertEqual(config["queue_size"] as? Int, 4)
    }

    /// A1111's counter: words and embedding vectors count, LoRA tags and BOS/EOS do not; a chunk
    /// holds 75.
    func testTokenCounter() throws {
        let s = try server
        func count(_ prompt: String) throws -> [Int] {
            let r = try s.call("POST", "/panorama/v1/tokens", json: ["prompt": prompt])
            XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
            let body = r.json as? [String: Int] ?? [:]
            return [body["tokens"] ?? -1, body["chunks"] ?? -1, body["limit"] ?? -1]
        }
        XCTAssertEqual(try count(""), [0, 1, 75])
        // the fixture's tokenizer has a small vocabulary: count against its own words
        let fox = try count("a red fox")[0]
        XCTAssertGreaterThanOrEqual(fox, 3)
        XCTAssertEqual(try count("a red fox <lora:peft-attn:0.8>"), [fox, 1, 75], "LoRA tags are not text")
        XCTAssertEqual(try count("a red fox tinyemb")[0], fox + 3, "tinyemb holds 3 vectors")
        XCTAssertEqual(try count("(a red fox:1.3)")[0], fox, "emphasis syntax is not text")
        let many = try count(Array(repeating: "a red fox", count: 30).joined(separator: " "))
        XCTAssertEqual(many[0], 30 * fox)
        XCTAssertEqual(many[1], (30 * fox + 74) / 75)
        XCTAssertEqual(many[2], 75 * many[1])
        XCTAssertEqual(try count("sea BREAK sky")[1], 2, "BREAK starts a chunk")
        XCTAssertEqual(try s.call("POST", "/panorama/v1/tokens", json: ["prompt": 5]).status, 200, "numbers are read as text, as pydantic does")
        XCTAssertEqual(try s.call("POST", "/panorama/v1/tokens", json: ["prompt": ["x"]]).status, 422)
    }

    /// Jobs queued without waiting: listed in order, cancelled while waiting, interrupted while
    /// running; their pictures reach the gallery with their parameters.
    func testJobsCancelAndGallery() throws {
        let s = try server
        let long: [String: Any] = ["mode": "txt2img", "prompt": "a long job", "steps": 400, "sampler_name": "DDIM", "seed": 5]
        let first = try s.call("POST", "/panorama/v1/jobs", json: long)
        XCTAssertEqual(first.status, 202, "\(first.json ?? "")")
        let firstID = try XCTUnwrap((first.json as? [String: Any])?["id"] as? String)
        let second = try s.call("POST", "/panorama/v1/jobs", json: ["prompt": "waits", "steps": 1, "seed": 6])
        let secondID = try XCTUnwrap((second.json as? [String: Any])?["id"] as? String)
        let third = try s.call("POST", "/panorama/v1/jobs", json: ["prompt": "runs after", "steps": 1, "seed": 7, "sampler_name": "Euler a"])
        let thirdID = try XCTUnwrap((third.json as? [String: Any])?["id"] as? String)

        func job(_ id: String) throws -> [String: Any] {
            try XCTUnwrap(try s.call("GET", "/panorama/v1/jobs/\(id)").json as? [String: Any])
        }
        try waitFor { try job(firstID)["state"] as? String == "running" && (job(firstID)["progress"] as? Double ?? 0) > 0 }
        let list = try XCTUnwrap((try s.call("GET", "/panorama/v1/jobs").json as? [String: Any])?["jobs"] as? [[String: Any]])
        XCTAssertEqual(list.prefix(3).compactMap { $0["id"] as? String }, [firstID, secondID, thirdID])
        XCTAssertEqual(list.prefix(3).map { $0["position"] as? Int }, [nil, 1, 2])
        XCTAssertEqual(try job(secondID)["position"] as? Int, 1)

        let cancelled = try s.call("DELETE", "/panorama/v1/jobs/\(secondID)")
        XCTAssertEqual((cancelled.json as? [String: Any])?["state"] as? String, "cancelled")
        XCTAssertEqual(try job(thirdID)["position"] as? Int, 1, "the cancelled job left the queue")
        XCTAssertEqual(try s.call("DELETE", "/panorama/v1/jobs/\(firstID)").status, 200)
        try waitFor { try job(thirdID)["state"] as? String == "done" }
        let interrupted = try job(firstID)
        XCTAssertEqual(interrupted["state"] as? String, "interrupted")
        XCTAssertEqual((interrupted["images"] as? [String])?.count, 1, "an interrupted job keeps its picture so far")
        let done = try job(thirdID)
        let id = try XCTUnwrap((done["images"] as? [String])?.first)
        XCTAssertTrue(id.hasSuffix("-7.png"), id)
        XCTAssertEqual(try s.call("GET", "/panorama/v1/jobs/j999").status, 404)

        let gallery = try XCTUnwrap(try s.call("GET", "/panorama/v1/gallery?limit=2").json as? [String: Any])
        let items = try XCTUnwrap(gallery["items"] as? [[String: Any]])
        XCTAssertEqual(items.first?["id"] as? String, id, "newest first")
        XCTAssertEqual(items.count, 2)
        let parameters = try XCTUnwrap(items.first?["parameters"] as? [String: String])
        XCTAssertEqual(parameters["Prompt"], "runs after")
        XCTAssertEqual(parameters["Seed"], "7")
        XCTAssertEqual(parameters["Sampler"], "Euler a")
        XCTAssertEqual(items.first?["width"] as? Int, 512)

        let picture = try rawGet(s, "/panorama/v1/gallery/\(id)")
        XCTAssertEqual(picture.status, 200)
        XCTAssertEqual(picture.type, "image/png")
        XCTAssertEqual(try ImageFile.read(data: picture.data).width, 512)
        for bad in ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "00001-1.png%2F..", "..", "00001-1.txt", "x-1.png", "00000-5.png.bak"] {
            let r = try rawGet(s, "/panorama/v1/gallery/\(bad)")
            XCTAssertEqual(r.status, 404, bad)
            XCTAssertFalse(String(decoding: r.data, as: UTF8.self).contains("root:"), bad)
        }
        XCTAssertEqual(try s.call("GET", "/panorama/v1/gallery?offset=-1").status, 422)
    }

    /// Regions through txt2img: two rectangles and an uploaded mask; the PNG records them, the
    /// mask is written beside it and served by the gallery.
    func testRegions() throws {
        let s = try server
        let mask = try base64PNG(width: 64, height: 64) { x, _ in x < 32 ? [255, 255, 255] : [0, 0, 0] }
        let r = try s.call("POST", "/sdapi/v1/txt2img", json: [
            "prompt": "a sky", "steps": 2, "width": 768, "height": 512, "seed": 3, "sampler_name": "DDIM",
            "panorama_regions": [
                ["rect": [0, 0, 256, 512], "prompt": "a sea", "negative_prompt": "boats", "weight": 2],
                ["rect": [0.5, 0, 0.25, 1], "prompt": "a forest", "feather": 16],
                ["mask": mask, "prompt": "a desert"],
            ] as [[String: Any]],
        ])
        XCTAssertEqual(r.status, 200, "\(r.json ?? "")")
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(((r.json as? [String: Any])?["info"] as? String ?? "").utf8)) as? [String: Any])
        let text = try XCTUnwrap((info["infotexts"] as? [String])?.first)
        XCTAssertTrue(text.contains("Regions: 3, Bootstrap steps: 1, Few-step regions: on"), text)

        let item = try XCTUnwrap(((try s.call("GET", "/panorama/v1/gallery?limit=1").json as? [String: Any])?["items"] as? [[String: Any]])?.first)
        let regions = try XCTUnwrap(item["regions"] as? [[String: Any]])
        XCTAssertEqual(regions.count, 3)
        XCTAssertEqual(regions[0]["rect"] as? [Double], [0, 0, 256, 512])
        XCTAssertEqual(regions[0]["negative_prompt"] as? String, "boats")
        XCTAssertEqual(regions[1]["feather"] as? Double, 16)
        let maskID = try XCTUnwrap(regions[2]["mask"] as? String)
        XCTAssertEqual(maskID, (item["id"] as? String ?? "").replacingOccurrences(of: ".png", with: "-region3.png"))
        let served = try rawGet(s, "/panorama/v1/gallery/\(maskID)")
        XCTAssertEqual(served.status, 200)
        let scaled = try ImageFile.read(data: served.data)
        XCTAssertEqual([scaled.width, scaled.height], [768, 512], "the mask is scaled to the canvas")
        let list = try XCTUnwrap((try s.call("GET", "/panorama/v1/gallery").json as? [String: Any])?["items"] as? [[String: Any]])
        XCTAssertFalse(list.contains { ($0["id"] as? String ?? "").contains("region") }, "masks are not gallery pictures")
    }

    func testBadRegionsAndJobs() throws {
        let s = try server
        func locations(_ r: (status: Int, json: Any?, headers: [AnyHashable: Any])) -> [[String]] {
            (((r.json as? [String: Any])?["detail"] as? [[String: Any]]) ?? []).compactMap { $0["loc"] as? [String] }
        }
        var r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_regions": [["rect": [0, 0, 8], "prompt": ""]]])
        XCTAssertEqual(r.status, 422)
        XCTAssertEqual(Set(locations(r)), [["body", "panorama_regions", "0", "rect"], ["body", "panorama_regions", "0", "prompt"]])
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_regions": [["rect": [400, 0, 400, 512], "prompt": "y"]]])
        XCTAssertEqual(r.status, 422, "a region outside the canvas")
        XCTAssertEqual(locations(r), [["body", "panorama_regions"]])
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_regions": [["mask": "../../etc/passwd", "prompt": "y"]]])
        XCTAssertEqual(r.status, 422, "a mask is base64, never a path")
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_regions": "everywhere"])
        XCTAssertEqual(locations(r), [["body", "panorama_regions"]])
        r = try s.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "x", "panorama_few_step": "sometimes",
                                                          "panorama_regions": [["rect": [0, 0, 1, 1], "prompt": "y"]]])
        XCTAssertEqual(locations(r), [["body", "panorama_few_step"]])
        r = try s.call("POST", "/panorama/v1/jobs", json: ["mode": "upscale", "prompt": "x"])
        XCTAssertEqual(locations(r), [["body", "mode"]])
        r = try s.call("POST", "/panorama/v1/jobs", json: ["mode": "txt2img", "prompt": "x", "sampler_name": "Heun"])
        XCTAssertEqual(r.status, 404, "the sampler is checked before the job is queued")
        XCTAssertEqual(try s.call("DELETE", "/panorama/v1/jobs/..%2F..").status, 404)
    }

    // MARK: helpers

    private func waitFor(_ timeout: TimeInterval = 120, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTFail("timed out")
    }

    private func rawGet(_ s: TestServer, _ path: String) throws -> (status: Int, type: String?, data: Data) {
        let url = try XCTUnwrap(URL(string: "http://127.0.0.1:\(s.port)\(path)"))
        let done = DispatchSemaphore(value: 0)
        let box = RawBox()
        URLSession.shared.dataTask(with: url) { data, response, _ in
            let http = response as? HTTPURLResponse
            box.value = (http?.statusCode ?? 0, http?.value(forHTTPHeaderField: "Content-Type"), data ?? Data())
            done.signal()
        }.resume()
        done.wait()
        return try XCTUnwrap(box.value)
    }
}

private final class RawBox: @unchecked Sendable { var value: (Int, String?, Data)? }
