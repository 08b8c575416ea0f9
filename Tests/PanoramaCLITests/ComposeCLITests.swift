import Foundation
import Imaging
import XCTest

/// `panorama compose` as a user runs it, on the tiny-pano model.
extension CLITests {
    private func writeMask(_ name: String, width: Int, height: Int, inside: (Int, Int) -> Bool) throws {
        var pixels: [UInt8] = []
        for y in 0..<height { for x in 0..<width { pixels += Array(repeating: inside(x, y) ? 255 : 0, count: 3) } }
        try PNG.write(RGBImage(width: width, height: height, pixels: pixels), to: folder.appendingPathComponent(name))
    }

    func testComposeWritesTheCompositionWithItsRegions() throws {
        try writeMask("mask.png", width: 1024, height: 512) { x, y in (x - 700) * (x - 700) + (y - 256) * (y - 256) < 150 * 150 }
        let json = #"{"regions": [{"mask": "mask.png", "prompt": "a lighthouse", "guidance": 5, "weight": 2}]}"#
        try Data(json.utf8).write(to: folder.appendingPathComponent("layout.json"))
        let r = try run(["compose", "--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "a sunny sky",
                         "--region", "0,0,0.25,1:a calm sea", "--regions", "layout.json", "--steps", "5", "--seed", "9",
                         "--stride", "32", "-o", "c.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("2 regions"), r.stderr)
        XCTAssertTrue(r.stderr.contains("step 5/5"), r.stderr)
        let url = folder.appendingPathComponent("c.png")
        XCTAssertEqual([try PNG.read(url).width, try PNG.read(url).height], [1024, 512])
        let text = try PNG.textChunks(of: url)
        XCTAssertEqual(text["parameters"], "a sunny sky\nSteps: 5, Sampler: DDIM, CFG scale: 7.5, Seed: 9, Size: 1024x512, Model hash: ecb206520c, Model: tiny-pano, Regions: 2, Bootstrap steps: 1, Few-step regions: on, Mask std: 8.0, Bootstrap background: white, MultiDiffusion stride: 32")
        XCTAssertEqual(text["regions"], #"[{"prompt":"a calm sea","rect":[0,0,0.25,1]},{"guidance":5,"mask":"mask.png","prompt":"a lighthouse","weight":2}]"#)
    }

    func testComposeBadInput() throws {
        try writeMask("small.png", width: 100, height: 50) { x, _ in x < 50 }
        try Data("[{\"prompt\": \"x\", \"rect\": [0, 0, 10]".utf8).write(to: folder.appendingPathComponent("broken.json"))
        try Data(#"[{"rect": [0, 0, 64, 64]}]"#.utf8).write(to: folder.appendingPathComponent("noprompt.json"))
        try Data(#"[{"mask": "absent.png", "prompt": "x"}]"#.utf8).write(to: folder.appendingPathComponent("absent.json"))
        let base = ["compose", "--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "sky", "--steps", "2"]
        try assertFails(base, saying: ["at least one --region"])
        try assertFails(base + ["--region", "900,0,200,100:boat"], saying: ["region 1", "reaches outside"])
        try assertFails(base + ["--region", "10,10,0,100:boat"], saying: ["region 1 has zero area"])
        try assertFails(base + ["--region", "0,0,64,64:  "], saying: ["region 1 has an empty prompt"])
        try assertFails(base + ["--region", "0,0,64:boat"], saying: ["four numbers"])
        try assertFails(base + ["--regions", "broken.json"], saying: ["broken.json", "not a valid regions file"])
        try assertFails(base + ["--regions", "noprompt.json"], saying: ["noprompt.json", "missing \"prompt\""])
        try assertFails(base + ["--regions", "absent.json"], saying: ["absent.png", "cannot read"])
        try assertFails(base + ["--regions", "missing.json"], saying: ["missing.json", "cannot read the regions file"])
        try Data(#"[{"mask": "small.png", "prompt": "x"}]"#.utf8).write(to: folder.appendingPathComponent("small.json"))
        try assertFails(base + ["--regions", "small.json"], saying: ["is 100x50 but the canvas is 1024x512", "--scale-masks"])
    }
}
