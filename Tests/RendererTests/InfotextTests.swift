import Foundation
import Renderer
import Schedulers
import XCTest

/// The A1111 infotext: its parser against A1111's rules (expectations from
/// tools/reference/make_infotext_fixtures.py, a re-implementation of `parse_generation_parameters`
/// with A1111's own field pattern), its `quote`, and the writer round-tripping every setting.
final class InfotextTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/infotext")

    private struct Cases: Decodable {
        struct Case: Decodable { let text: String; let a1111: [String: String] }
        struct Quote: Decodable { let value: String; let quoted: String }
        let cases: [Case]
        let quote: [Quote]
    }

    private func cases() throws -> Cases {
        try JSONDecoder().decode(Cases.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("cases.json")))
    }

    func testParsesLikeA1111() throws {
        let fixture = try cases()
        XCTAssertEqual(fixture.cases.count, 11)
        for c in fixture.cases {
            XCTAssertEqual(Infotext(parsing: c.text).a1111Parameters, c.a1111, c.text)
        }
    }

    func testParsedFieldsOfAnA1111Text() throws {
        let info = Infotext(parsing: try cases().cases[0].text)
        XCTAssertEqual(info.prompt, "masterpiece, best quality, (snowy mountains:1.2), <lora:detail_tweaker:0.5>")
        XCTAssertEqual(info.negativePrompt, "EasyNegative, (worst quality:1.4), [blurry]")
        XCTAssertEqual(info.fields.count, 16)
        XCTAssertEqual(info["Hires upscaler"], "R-ESRGAN 4x+ Anime6B")
        XCTAssertEqual(info["Lora hashes"], "detail_tweaker: 7c6a0b2ff0a1")
        let r = try info.recalledSettings()
        XCTAssertEqual(r.steps, 25)
        XCTAssertEqual(r.guidanceScale, 7)
        XCTAssertEqual(r.seed, 1_234_567_890)
        XCTAssertEqual([r.width, r.height], [768, 512])
        XCTAssertEqual(r.clipSkip, 1, "A1111's Clip skip 2 is one layer skipped")
        XCTAssertEqual(r.denoisingStrength, 0.45)
        XCTAssertEqual(try r.sampler(), .dpmSolver2MKarras)
    }

    func testQuoteIsJSONDumpsForValuesWithCommasColonsOrNewlines() throws {
        for q in try cases().quote {
            XCTAssertEqual(Infotext.quote(q.value), q.quoted)
        }
    }

    private func settings() -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "snowy mountains, <lora:detail:0.6>", width: 2048, height: 512)
        s.negativePrompt = "fog, (blurry:1.2)"
        s.steps = 20
        s.seed = 42
        return s
    }

    /// Today's renders keep their exact text; new fields go where A1111 puts them.
    func testWriterFormat() {
        var s = settings()
        XCTAssertEqual(Infotext(settings: s, model: "tiny-pano").text,
                       "snowy mountains, <lora:detail:0.6>\nNegative prompt: fog, (blurry:1.2)\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 2048x512, Model: tiny-pano, MultiDiffusion stride: 8")
        s.sampler = .dpmSolver2MKarras
        s.clipSkip = 1
        s.circular = true
        s.windowWeighting = .gaussian(sigma: 0.2)
        s.decodeMethod = .whole
        let text = Infotext(settings: s, model: "my model", modelHash: "0123456789", vae: "vae-ft-mse.safetensors",
                            extra: [Infotext.Field("Denoising strength", "0.35")],
                            loraHashes: [(name: "detail", hash: "7c6a0b2ff0a1"), (name: "lcm", hash: "aaaaaaaaaaaa")],
                            embeddingHashes: [(name: "EasyNegative", hash: "c74b4e810b03")], emphasis: "none",
                            precision: "bf16").text
        XCTAssertEqual(text, """
            snowy mountains, <lora:detail:0.6>
            Negative prompt: fog, (blurry:1.2)
            Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 2048x512, \
            Model hash: 0123456789, Model: my model, VAE: vae-ft-mse.safetensors, Clip skip: 2, Denoising strength: 0.35, \
            Lora hashes: "detail: 7c6a0b2ff0a1, lcm: aaaaaaaaaaaa", TI hashes: "EasyNegative: c74b4e810b03", Emphasis: none, \
            MultiDiffusion stride: 8, Circular: true, VAE decode: whole, Window weights: "gaussian:0.2", Precision: bf16
            """)
    }

    /// Every setting the writer records comes back from the text, for every sampler.
    func testRoundTrip() throws {
        for sampler in Sampler.allCases {
            var s = settings()
            s.prompt = "line one,\nline two: with \"quotes\""
            s.negativePrompt = sampler == .euler ? "" : "neg\nmore"
            s.sampler = sampler
            s.guidanceScale = 6.25
            s.eta = sampler == .ddim ? 0.5 : 0
            s.clipSkip = sampler == .euler ? 0 : 2
            s.stride = 16
            s.circular = sampler == .ddim
            s.spotDiffusion = sampler == .eulerAncestral
            s.windowWeighting = sampler == .dpmSolver2M ? .gaussian : .uniform
            let written = Infotext(settings: s, model: "m", modelHash: "abcdef0123", precision: "fp32")
            let read = Infotext(parsing: written.text)
            XCTAssertEqual(read, written, written.text)
            let r = try read.recalledSettings()
            XCTAssertEqual(r.prompt, s.prompt)
            XCTAssertEqual(r.negativePrompt, s.negativePrompt)
            XCTAssertEqual(try r.sampler(), sampler)
            XCTAssertEqual(r.steps, s.steps)
            XCTAssertEqual(r.guidanceScale, s.guidanceScale)
            XCTAssertEqual(r.seed, s.seed)
            XCTAssertEqual([r.width, r.height], [s.width, s.height])
            XCTAssertEqual(r.eta ?? 0, s.eta)
            XCTAssertEqual(r.clipSkip ?? 0, s.clipSkip)
            XCTAssertEqual(r.circular ?? false, s.circular)
            XCTAssertEqual(r.spotDiffusion ?? false, s.spotDiffusion)
            if !s.spotDiffusion { XCTAssertEqual(r.stride, s.stride) }
            XCTAssertEqual(r.windowWeighting ?? .uniform, s.windowWeighting)
            XCTAssertEqual(r.modelHash, "abcdef0123")
            XCTAssertNil(r.precision, "fp32 is not written")
        }
    }

    func testSamplerNames() throws {
        func sampler(_ name: String, _ schedule: String? = nil) throws -> Sampler? {
            var r = RecalledSettings(prompt: "", negativePrompt: "")
            (r.samplerName, r.scheduleType) = (name, schedule)
            return try r.sampler()
        }
        XCTAssertEqual(try sampler("DPM++ 2M Karras"), .dpmSolver2MKarras)
        XCTAssertEqual(try sampler("DPM++ 2M", "Karras"), .dpmSolver2MKarras)
        XCTAssertEqual(try sampler("DPM++ 2M"), .dpmSolver2M)
        XCTAssertEqual(try sampler("DPM++ 2M", "Automatic"), .dpmSolver2M)
        XCTAssertEqual(try sampler("Euler a"), .eulerAncestral)
        XCTAssertEqual(try sampler("euler-a"), .eulerAncestral)
        XCTAssertEqual(try sampler("DDIM"), .ddim)
        XCTAssertThrowsError(try sampler("DPM++ SDE", "Karras")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("\"DPM++ SDE\" with schedule type \"Karras\""), message)
            XCTAssertTrue(message.contains("DDIM, DPM++ 2M"), message)
        }
        XCTAssertThrowsError(try sampler("Euler", "Exponential"))
    }

    func testUnreadableValuesAreNamed() {
        for (text, key) in [("p\nSteps: many, Sampler: Euler, CFG scale: 7", "Steps"),
                            ("p\nSteps: 2, Seed: -1, CFG scale: 7", "Seed"),
                            ("p\nSteps: 2, Size: 512 by 512, CFG scale: 7", "Size"),
                            ("p\nSteps: 2, Clip skip: 0, CFG scale: 7", "Clip skip"),
                            ("p\nSteps: 2, Window weights: square, CFG scale: 7", "Window weights")] {
            XCTAssertThrowsError(try Infotext(parsing: text).recalledSettings(), text) { error in
                XCTAssertTrue("\(error)".contains(key), "\(error)")
            }
        }
    }

    /// Hostile text parses in linear time and without a crash.
    func testLongAndOddTextParses() {
        let long = String(repeating: "Key: \"\\\\\\\"", count: 20_000) + "\n" + String(repeating: "a: b, ", count: 50_000)
        // regex engines are quadratic on these (a start at every character rescans the run)
        let words = "p\n" + String(repeating: "a", count: 2_000_000)
        let spaces = "p\n" + String(repeating: " ", count: 2_000_000) + "x"
        let start = Date()
        let info = Infotext(parsing: long)
        XCTAssertEqual(Infotext(parsing: words).fields.count, 0)
        XCTAssertEqual(Infotext(parsing: spaces).fields.count, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        XCTAssertEqual(info.fields.count, 0, "keys of one character are not fields")
        XCTAssertEqual(Infotext(parsing: "").prompt, "")
        XCTAssertEqual(Infotext(parsing: "\u{0}\u{FFFF}:\"").prompt, "\u{0}\u{FFFF}:\"")
    }
}
