import Foundation
import Imaging
import XCTest

/// `--preview FILE.png`: the canvas after every step, for an image viewer.
extension CLITests {
    func testPreviewIsWrittenAtTheOutputSize() throws {
        let r = try run(["--model", Self.tinyModel, "--prompt", "a lake", "--W", "768", "--H", "512", "--seed", "3", "--steps", "2",
                         "--preview", "live.png", "-o", "final.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("preview: latent-to-RGB map fitted to the VAE"), r.stderr)
        let preview = try PNG.read(folder.appendingPathComponent("live.png"))
        XCTAssertEqual([preview.width, preview.height], [768, 512], "the latent size x8")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(), ["final.png", "live.png"], "no temporary file left")
        // with a tiny decoder, its decode is the preview
        let tiny = try run(["--model", Self.tinyModel, "--prompt", "a lake", "--W", "512", "--H", "512", "--seed", "3", "--steps", "1",
                            "--taesd", taesdDecoder, "--preview", "live.png", "-o", "tiny.png"])
        XCTAssertEqual(tiny.status, 0, tiny.stderr)
        XCTAssertEqual(try PNG.read(folder.appendingPathComponent("live.png")).width, 512)
    }

    /// `--preview-every N`: after every Nth step and the last, as the step lines say.
    func testPreviewCadence() throws {
        let r = try run(["--model", Self.tinyModel, "--prompt", "a lake", "--W", "512", "--H", "512", "--seed", "3", "--steps", "5",
                         "--preview", "live.png", "--preview-every", "2", "-o", "final.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let steps = r.stderr.split(separator: "\n").filter { $0.hasPrefix("step ") }
        XCTAssertEqual(steps.count, 5, r.stderr)
        XCTAssertEqual(steps.map { $0.hasSuffix(" · preview") }, [false, true, false, true, true], r.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("live.png").path))
    }

    func testPreviewOptionErrors() throws {
        let common = ["--model", Self.tinyModel, "--prompt", "x", "--W", "512", "--H", "512"]
        try assertFails(common + ["--preview", "live.jpg"], saying: ["--preview must name a .png file"])
        try assertFails(common + ["--preview", "missing/live.png"], saying: ["does not exist"])
        try assertFails(common + ["--preview-every", "2"], saying: ["--preview-every needs --preview FILE.png"])
        try assertFails(common + ["--preview", "live.png", "--preview-every", "0"], saying: ["--preview-every must be at least 1"])
    }
}
