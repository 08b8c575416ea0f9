import Foundation
import Imaging
import XCTest

/// `panorama upscale` as a user runs it, on the tiny-pano model.
extension CLITests {
    private func writeInput(_ name: String, width: Int, height: Int) throws {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width { pixels += [UInt8(x % 256), UInt8(y % 256), UInt8((x + y) % 256)] }
        }
        try PNG.write(RGBImage(width: width, height: height, pixels: pixels), to: folder.appendingPathComponent(name))
    }

    func testUpscaleWritesTheEnlargedImageWithParameters() throws {
        try writeInput("in.png", width: 320, height: 256)
        let r = try run(["upscale", "--model", Self.tinyModel, "--input", "in.png", "--scale", "2", "--prompt", "hills",
                         "--steps", "4", "--strength", "0.5", "--seed", "3", "--stride", "32", "-o", "up.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("step 2/2"), r.stderr)
        let url = folder.appendingPathComponent("up.png")
        let image = try PNG.read(url)
        XCTAssertEqual([image.width, image.height], [640, 512])
        XCTAssertEqual(try PNG.textChunks(of: url)["parameters"],
                       "hills\nSteps: 4, Sampler: DDIM, CFG scale: 7.5, Seed: 3, Size: 640x512, Model hash: ecb206520c, Model: tiny-pano, Denoising strength: 0.5, Upscaled from: 320x256, MultiDiffusion stride: 32")
    }

    func testUpscaleBadInput() throws {
        try writeInput("small.png", width: 320, height: 256)
        try Data("not a png".utf8).write(to: folder.appendingPathComponent("text.png"))
        let truncated = Self.fixtures.appendingPathComponent("images/truncated.png").path
        let base = ["upscale", "--model", Self.tinyModel, "--prompt", "x", "--steps", "2"]
        try assertFails(base + ["--input", "missing.png"], saying: ["missing.png", "cannot read"])
        try assertFails(base + ["--input", "text.png"], saying: ["text.png", "cannot read"])
        try assertFails(base + ["--input", truncated], saying: ["truncated.png", "cannot read"])
        // JPEG and WebP go through the same reader (ImageFile.read): refused by name and reason
        let inputs = Self.fixtures.appendingPathComponent("images/input")
        try assertFails(base + ["--input", inputs.appendingPathComponent("truncated.jpg").path],
                        saying: ["truncated.jpg", "Premature end of JPEG file"])
        try assertFails(base + ["--input", inputs.appendingPathComponent("animated.webp").path],
                        saying: ["animated.webp", "animated WebP is not supported"])
        try assertFails(base + ["--input", inputs.appendingPathComponent("text.jpg").path],
                        saying: ["text.jpg", "not a PNG, JPEG or WebP file"])
        try assertFails(base + ["--input", "small.png", "--scale", "0"], saying: ["--scale must be more than 0"])
        try assertFails(base + ["--input", "small.png", "--strength", "1.5"], saying: ["--strength must be between 0 and 1"])
        try assertFails(base + ["--input", "small.png", "--scale", "1"], saying: ["smaller than the model's 512-pixel window"])
        try assertFails(base + ["--input", "small.png", "--W", "1020"], saying: ["width 1020 is not a multiple of 8"])
    }
}
