import Foundation
import Imaging
import XCTest

/// Few-step sampling from the command line: LCM and TCD, timestep spacing, noise fusion, TAESD.
extension CLITests {
    var taesdDecoder: String { Self.fixtures.appendingPathComponent("models/tiny-taesd/separate/taesd_decoder.safetensors").path }

    func parameters(_ name: String) throws -> String {
        try XCTUnwrap(try PNG.textChunks(of: folder.appendingPathComponent(name))["parameters"])
    }

    func testLCMAndTCDRenderAndAreRecorded() throws {
        let common = ["--model", Self.tinyModel, "--prompt", "a lake", "--W", "768", "--H", "512", "--seed", "3", "--guidance", "1"]
        var r = try run(common + ["--scheduler", "lcm", "--steps", "2", "-o", "lcm.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lcm = try parameters("lcm.png")
        XCTAssertTrue(lcm.contains("Steps: 2, Sampler: LCM, CFG scale: 1.0"), lcm)
        r = try run(common + ["--scheduler", "tcd", "--steps", "2", "-o", "tcd.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let tcd = try parameters("tcd.png")
        XCTAssertTrue(tcd.contains("Eta: 0.3"), "TCD's default gamma is recorded: \(tcd)")
        // the recorded picture renders again the same
        r = try run(["--model", Self.tinyModel, "--from-png", "tcd.png", "-o", "again.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try PNG.read(folder.appendingPathComponent("again.png")), try PNG.read(folder.appendingPathComponent("tcd.png")))
    }

    /// A folder whose scheduler file is an LCMScheduler (an LCM-distilled model) samples with LCM.
    func testLCMModelFolderDefaultsToLCM() throws {
        let model = Self.fixtures.appendingPathComponent("models/tiny-lcm").path
        let r = try run(["--model", model, "--prompt", "a lake", "--W", "512", "--H", "512", "--steps", "2", "--seed", "1",
                         "-o", "distilled.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = try parameters("distilled.png")
        XCTAssertTrue(text.contains("Sampler: LCM"), text)
    }

    func testTurboStyleTrailingEulerAndPerWindowNoise() throws {
        let r = try run(["--model", Self.tinyModel, "--prompt", "a lake", "--W", "768", "--H", "512", "--seed", "3", "--guidance", "1",
                         "--scheduler", "euler-a", "--steps", "1", "--timestep-spacing", "trailing", "--noise-fusion", "per-window",
                         "-o", "turbo.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = try parameters("turbo.png")
        XCTAssertTrue(text.contains("Sampler: Euler a, Schedule type: SGM Uniform"), text)
        XCTAssertTrue(text.contains("Noise fusion: per-window"), text)
    }

    func testFewStepOptionErrors() throws {
        let common = ["--model", Self.tinyModel, "--prompt", "x", "--W", "512", "--H", "512"]
        try assertFails(common + ["--timestep-spacing", "even"], saying: ["unknown --timestep-spacing \"even\"", "trailing"])
        try assertFails(common + ["--noise-fusion", "blend"], saying: ["unknown --noise-fusion \"blend\"", "per-window"])
        try assertFails(common + ["--scheduler", "lcm", "--eta", "0.5"], saying: ["--eta applies to the ddim and tcd samplers only"])
        try assertFails(common + ["--scheduler", "tcd", "--eta", "1.5"], saying: ["between 0 and 1"])
        try assertFails(common + ["--scheduler", "lcm", "--steps", "60"], saying: ["60"])
        try assertFails(common + ["--taesd", folder.appendingPathComponent("none.safetensors").path], saying: ["none.safetensors"])
    }

    func testTAESDDecodesAndIsRecorded() throws {
        let r = try run(["--model", Self.tinyModel, "--prompt", "a lake", "--W", "768", "--H", "512", "--seed", "3", "--steps", "2",
                         "--taesd", taesdDecoder, "-o", "tiny.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = try parameters("tiny.png")
        XCTAssertTrue(text.contains("TAESD: taesd_decoder.safetensors"), text)
        XCTAssertEqual(try PNG.read(folder.appendingPathComponent("tiny.png")).width, 768)
    }
}
