import Foundation
import Imaging
import XCTest

/// `panorama outpaint` and `panorama inpaint` on the tiny models.
extension CLITests {
    /// A smooth test picture, `width` x `height`.
    func writePicture(_ name: String, width: Int, height: Int) throws -> URL {
        var pixels = [UInt8]()
        for y in 0..<height {
            for x in 0..<width { pixels += [UInt8(x * 255 / width), UInt8(y * 255 / height), UInt8((x + y) % 256)] }
        }
        let url = folder.appendingPathComponent(name)
        try PNG.write(RGBImage(width: width, height: height, pixels: pixels), to: url)
        return url
    }

    /// A black mask with a white rectangle.
    func writeMask(_ name: String, width: Int, height: Int, white: (x: Range<Int>, y: Range<Int>)) throws -> URL {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in white.y { for x in white.x { for c in 0..<3 { pixels[(y * width + x) * 3 + c] = 255 } } }
        let url = folder.appendingPathComponent(name)
        try PNG.write(RGBImage(width: width, height: height, pixels: pixels), to: url)
        return url
    }

    func testOutpaintKeepsTheInputAndRecordsIt() throws {
        let input = try writePicture("photo.png", width: 300, height: 256)
        let r = try run(["outpaint", "--model", Self.tinyModel, "--input", input.path, "--W", "1024", "--H", "512",
                         "--prompt", "a lake", "--steps", "2", "--seed", "4", "--mask-blur", "0", "-o", "wide.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try PNG.read(folder.appendingPathComponent("wide.png"))
        XCTAssertEqual([out.width, out.height], [1024, 512])
        let layout = try OutpaintLayout(inputWidth: 300, inputHeight: 256, canvasWidth: 1024, canvasHeight: 512)
        let canvas = layout.canvasImage(try PNG.read(input))
        for y in stride(from: 0, to: 512, by: 7) {
            for x in layout.x..<(layout.x + layout.width) {
                let i = (y * 1024 + x) * 3
                XCTAssertEqual(Array(out.pixels[i..<i + 3]), Array(canvas.pixels[i..<i + 3]), "pixel \(x),\(y) of the input changed")
            }
        }
        let text = try parameters("wide.png")
        XCTAssertTrue(text.contains("Denoising strength: 0.9, Outpaint input: photo.png, Input hash: "), text)
        XCTAssertTrue(text.contains("Mask blur: 0"), text)
        XCTAssertTrue(text.contains("Outpaint placement: 600x512+208+0"), text)
    }

    func testInpaintRepaintsOnlyTheMask() throws {
        let input = try writePicture("photo.png", width: 516, height: 512)  // not a multiple of 8 wide
        let mask = try writeMask("mask.png", width: 516, height: 512, white: (100..<300, 200..<400))
        for (name, model) in [("four.png", Self.tinyModel), ("nine.png", Self.fixtures.appendingPathComponent("models/tiny-inpaint").path)] {
            let r = try run(["inpaint", "--model", model, "--input", input.path, "--mask", mask.path, "--mask-blur", "0",
                             "--prompt", "a boat", "--steps", "2", "--seed", "4", "-o", name])
            XCTAssertEqual(r.status, 0, r.stderr)
            let out = try PNG.read(folder.appendingPathComponent(name)), original = try PNG.read(input)
            XCTAssertEqual([out.width, out.height], [516, 512])
            var changedInside = 0
            for y in 0..<512 {
                for x in 0..<516 {
                    let i = (y * 516 + x) * 3
                    let same = out.pixels[i..<i + 3].elementsEqual(original.pixels[i..<i + 3])
                    if (100..<300).contains(x) && (200..<400).contains(y) {
                        if !same { changedInside += 1 }
                    } else if !same {
                        return XCTFail("\(name): pixel \(x),\(y) outside the mask changed")
                    }
                }
            }
            XCTAssertGreaterThan(changedInside, 200 * 200 / 2, name)
            let text = try parameters(name)
            XCTAssertTrue(text.contains("Denoising strength: 1.0, Mask blur: 0, Inpaint input: photo.png, Input hash: "), text)
            XCTAssertTrue(text.contains("Mask: mask.png, Mask hash: "), text)
        }
    }

    func testOutpaintAndInpaintRefuseBadInput() throws {
        let input = try writePicture("photo.png", width: 512, height: 512)
        let small = try writeMask("small.png", width: 256, height: 256, white: (0..<128, 0..<128))
        let black = try writeMask("black.png", width: 512, height: 512, white: (0..<0, 0..<0))
        let white = try writeMask("white.png", width: 512, height: 512, white: (0..<512, 0..<512))
        let text = folder.appendingPathComponent("notes.jpg")
        try "not a picture".write(to: text, atomically: true, encoding: .utf8)
        let inpaint = ["inpaint", "--model", Self.tinyModel, "--input", input.path, "--prompt", "x", "--steps", "1"]
        try assertFails(inpaint + ["--mask", small.path], saying: ["256x256", "512x512", "--scale-mask"])
        try assertFails(inpaint + ["--mask", black.path], saying: ["nothing to repaint"])
        try assertFails(inpaint + ["--mask", white.path], saying: ["white everywhere"])
        try assertFails(inpaint + ["--mask", text.path], saying: ["notes.jpg"])
        try assertFails(inpaint + ["--mask", small.path, "--scale-mask", "--strength", "0"], saying: ["--strength"])
        let outpaint = ["outpaint", "--model", Self.tinyModel, "--prompt", "x", "--steps", "1"]
        try assertFails(outpaint + ["--input", input.path, "--W", "512", "--H", "512"], saying: ["already fills the canvas"])
        try assertFails(outpaint + ["--input", input.path, "--W", "1024", "--H", "256", "--keep-size"], saying: ["larger than the 1024x256 canvas"])
        try assertFails(outpaint + ["--input", input.path, "--anchor", "middle"], saying: ["unknown --anchor \"middle\""])
        try assertFails(outpaint + ["--input", input.path, "--overlap", "300"], saying: ["--overlap 300"])
        try assertFails(outpaint + ["--input", text.path], saying: ["notes.jpg"])
    }
}
