import Foundation
import Imaging
import XCTest

/// `panorama info` and `--from-png`: every PNG this program writes reads back, and renders again
/// from its parameters to the same pixels; A1111 and ComfyUI pictures are read.
extension CLITests {
    static let infotextFixtures = fixtures.appendingPathComponent("infotext")

    private func info(_ file: String) throws -> [String: Any] {
        let r = try run(["info", "--json", file])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
    }

    private func text(_ name: String) throws -> String? {
        try PNG.textChunks(of: folder.appendingPathComponent(name))["parameters"]
    }

    private func pixels(_ name: String) throws -> [UInt8] {
        try PNG.read(folder.appendingPathComponent(name)).pixels
    }

    func testInfoAndFromPNGRoundTripARender() throws {
        let loras = Self.fixtures.appendingPathComponent("lora").path
        let r = try run(["--model", Self.tinyModel, "--W", "576", "--H", "512", "--prompt", "snowy peaks: high, <lora:kohya-locon:0.5>",
                         "--negative-prompt", "fog\nhaze", "--steps", "2", "--seed", "42", "--stride", "16", "--lora-dir", loras,
                         "--scheduler", "euler", "--window-weights", "gaussian:0.2", "--circular", "-o", "a.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let object = try info("a.png")
        XCTAssertEqual(object["prompt"] as? String, "snowy peaks: high, <lora:kohya-locon:0.5>")
        XCTAssertEqual(object["negative_prompt"] as? String, "fog\nhaze")
        XCTAssertEqual(object["width"] as? Int, 576)
        XCTAssertEqual(object["height"] as? Int, 512)
        XCTAssertEqual(object["seed"] as? Int, 42)
        XCTAssertEqual(object["steps"] as? Int, 2)
        XCTAssertEqual(object["cfg_scale"] as? Double, 7.5)
        XCTAssertEqual(object["scheduler"] as? String, "euler")
        let parameters = object["parameters"] as? [String: String] ?? [:]
        XCTAssertEqual(parameters["Window weights"], "gaussian:0.2")
        XCTAssertEqual(parameters["Circular"], "true")
        XCTAssertEqual(parameters["Model hash"], "ecb206520c")
        // A1111's short LoRA hash: sha256 after the safetensors header (hashlib, hashes.json), 12 hex
        XCTAssertEqual(parameters["Lora hashes"], "kohya-locon: 4a1ae2c908e7")
        XCTAssertEqual(parameters.count, 11, "\(parameters)")

        let plain = try run(["info", "a.png"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stdout.contains("Prompt: snowy peaks: high, <lora:kohya-locon:0.5>\nNegative prompt: fog\nhaze\nSteps: 2\n"), plain.stdout)

        // the same picture again from its parameters alone
        let again = try run(["--model", Self.tinyModel, "--from-png", "a.png", "--lora-dir", loras, "-o", "b.png"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try text("b.png"), try text("a.png"))
        XCTAssertEqual(try pixels("b.png"), try pixels("a.png"))
        // explicit flags win
        let other = try run(["--model", Self.tinyModel, "--from-png", "a.png", "--lora-dir", loras, "--seed", "43",
                             "--scheduler", "ddim", "-o", "c.png"])
        XCTAssertEqual(other.status, 0, other.stderr)
        let c = try text("c.png") ?? ""
        XCTAssertTrue(c.contains("Sampler: DDIM, CFG scale: 7.5, Seed: 43, Size: 576x512"), c)
        XCTAssertTrue(c.hasPrefix("snowy peaks: high, <lora:kohya-locon:0.5>\nNegative prompt: fog\nhaze\n"), c)
        XCTAssertNotEqual(try pixels("c.png"), try pixels("a.png"))
    }

    func testInfoAndFromPNGRoundTripACompositionAndAnUpscale() throws {
        let r = try run(["compose", "--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "a sunny sky",
                         "--region", "0,0,0.25,1:a calm sea, waves", "--region", "512,0,512,512:snowy mountains",
                         "--steps", "3", "--seed", "9", "--stride", "32", "--feather", "8", "-o", "c.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let object = try info("c.png")
        let regions = object["regions"] as? [[String: Any]] ?? []
        XCTAssertEqual(regions.map { $0["prompt"] as? String }, ["a calm sea, waves", "snowy mountains"])
        XCTAssertEqual((object["parameters"] as? [String: String])?["Regions"], "2")
        let plain = try run(["info", "c.png"])
        XCTAssertTrue(plain.stdout.contains("Regions (compose):\n  1. rect 0,0,0.25,1: a calm sea, waves, feather 8"), plain.stdout)
        let again = try run(["compose", "--model", Self.tinyModel, "--from-png", "c.png", "-o", "d.png"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try PNG.textChunks(of: folder.appendingPathComponent("d.png")),
                       try PNG.textChunks(of: folder.appendingPathComponent("c.png")))
        XCTAssertEqual(try pixels("d.png"), try pixels("c.png"))

        // upscale: its parameters, then again from them (the input is given; strength comes back)
        let input = try PNG.read(folder.appendingPathComponent("c.png")).resizedNearest(width: 320, height: 256)
        try PNG.write(input, to: folder.appendingPathComponent("in.png"))
        let up = try run(["upscale", "--model", Self.tinyModel, "--input", "in.png", "--prompt", "hills", "--steps", "4",
                          "--strength", "0.5", "--seed", "3", "--stride", "32", "-o", "up.png"])
        XCTAssertEqual(up.status, 0, up.stderr)
        let upInfo = try info("up.png")
        XCTAssertEqual((upInfo["parameters"] as? [String: String])?["Denoising strength"], "0.5")
        XCTAssertEqual((upInfo["parameters"] as? [String: String])?["Upscaled from"], "320x256")
        XCTAssertEqual(upInfo["width"] as? Int, 640)
        let upAgain = try run(["upscale", "--model", Self.tinyModel, "--from-png", "up.png", "--input", "in.png", "-o", "up2.png"])
        XCTAssertEqual(upAgain.status, 0, upAgain.stderr)
        XCTAssertEqual(try text("up2.png"), try text("up.png"))
        XCTAssertEqual(try pixels("up2.png"), try pixels("up.png"))
    }

    func testInfoReadsComfyUIAndA1111Pictures() throws {
        let comfy = try info(Self.infotextFixtures.appendingPathComponent("comfyui.png").path)
        let graph = comfy["comfyui"] as? [String: Any] ?? [:]
        let sampler = (graph["samplers"] as? [[String: Any]])?.first ?? [:]
        XCTAssertEqual(sampler["seed"] as? Int, 156_680_208_700_286)
        XCTAssertEqual(sampler["steps"] as? Int, 20)
        XCTAssertEqual(sampler["cfg"] as? Double, 8)
        XCTAssertEqual(sampler["sampler_name"] as? String, "euler")
        XCTAssertEqual(sampler["positive"] as? String, "beautiful scenery, glass bottle with a galaxy")
        XCTAssertEqual(sampler["negative"] as? String, "text, watermark", "followed through a PrimitiveString node")
        XCTAssertEqual(graph["checkpoints"] as? [String], ["v1-5-pruned-emaonly.safetensors"])
        XCTAssertEqual(graph["sizes"] as? [[Int]], [[1024, 512]])
        XCTAssertEqual(graph["workflow_nodes"] as? Int, 8)
        XCTAssertEqual((graph["node_classes"] as? [String: Int])?["CLIPTextEncode"], 2)
        let plain = try run(["info", Self.infotextFixtures.appendingPathComponent("comfyui.png").path])
        XCTAssertTrue(plain.stdout.contains("KSampler (node 3): seed 156680208700286, steps 20"), plain.stdout)
        try assertFails(["--model", Self.tinyModel, "--from-png", Self.infotextFixtures.appendingPathComponent("comfyui.png").path],
                        saying: ["no \"parameters\" text chunk", "ComfyUI"])

        let a1111 = Self.infotextFixtures.appendingPathComponent("a1111-itxt.png").path
        let object = try info(a1111)
        XCTAssertEqual(object["prompt"] as? String, "雪山 — café au lait")
        XCTAssertEqual((object["parameters"] as? [String: String])?["A/B-test key"], "yes")
        XCTAssertEqual([object["width"] as? Int, object["height"] as? Int], [1024, 576])
        let r = try run(["--model", Self.tinyModel, "--from-png", a1111, "--W", "512", "--H", "512", "--steps", "1", "-o", "a.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try text("a.png"), "雪山 — café au lait\nSteps: 1, Sampler: Euler, CFG scale: 4.0, Seed: 3, Size: 512x512, Model hash: ecb206520c, Model: tiny-pano, MultiDiffusion stride: 8")
    }

    func testFromPNGAndInfoBadInput() throws {
        let image = RGBImage(width: 8, height: 8, pixels: Array(repeating: 128, count: 192))
        try PNG.write(image, to: folder.appendingPathComponent("plain.png"))
        try PNG.write(image, to: folder.appendingPathComponent("sde.png"), text: [(key: "parameters",
            value: "a lake\nSteps: 1, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512")])
        try PNG.write(image, to: folder.appendingPathComponent("steps.png"), text: [(key: "parameters",
            value: "a lake\nSteps: lots, Sampler: Euler, CFG scale: 7")])
        try assertFails(["info", "plain.png"], saying: ["plain.png has no generation parameters", "no text chunks"])
        try assertFails(["--model", Self.tinyModel, "--from-png", "plain.png"], saying: ["plain.png has no \"parameters\" text chunk"])
        try assertFails(["--model", Self.tinyModel, "--from-png", "sde.png"],
                        saying: ["\"DPM++ SDE\" with schedule type \"Karras\"", "DDIM, DPM++ 2M", "--scheduler"])
        try assertFails(["--model", Self.tinyModel, "--from-png", "steps.png"], saying: ["\"Steps: lots\" is not a whole number"])
        try assertFails(["--model", Self.tinyModel, "--W", "512", "--H", "512"], saying: ["missing --prompt", "--from-png"])
        try assertFails(["--model", Self.tinyModel, "--from-png", "absent.png"], saying: ["absent.png"])
        let r = try run(["--model", Self.tinyModel, "--from-png", "sde.png", "--scheduler", "ddim", "-o", "ok.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(try text("ok.png")?.hasPrefix("a lake\nSteps: 1, Sampler: DDIM, CFG scale: 7.0, Seed: 1, Size: 512x512") == true)
        // a ComfyUI graph whose links fan out and loop: each node is followed once
        let keys = ["text", "text_g", "text_l", "prompt", "string", "value", "conditioning", "conditioning_1", "conditioning_to"]
        var graph: [String: Any] = ["s": ["class_type": "KSampler", "inputs": ["positive": ["0", 0], "negative": ["1", 0], "seed": 1]]]
        for i in 0..<60 {
            graph[String(i)] = ["class_type": "X", "inputs": Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, [String((i + 1 + $0) % 60), 0]) })]
        }
        let graphText = String(decoding: try JSONSerialization.data(withJSONObject: graph), as: UTF8.self)
        try PNG.write(image, to: folder.appendingPathComponent("loop.png"), text: [(key: "prompt", value: graphText)])
        let start = Date()
        let loop = try run(["info", "loop.png"])
        XCTAssertEqual(loop.status, 0, loop.stderr)
        XCTAssertTrue(loop.stdout.contains("positive: (not found)"), loop.stdout)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        for hostile in ["bomb.png", "truncated-text.png", "huge-length.png", "bad-utf8.png"] {
            let h = try run(["info", Self.infotextFixtures.appendingPathComponent(hostile).path])
            XCTAssertEqual(h.status, 64, "\(hostile): \(h.stderr)")
            XCTAssertTrue(h.stderr.contains(hostile), h.stderr)
        }
    }
}
