import Foundation
import Imaging
import XCTest

/// `--count N` (A1111's batch count): picture k is the single render with seed s+k.
extension CLITests {
    func testCountRendersConsecutiveSeedsEqualToSingleRenders() throws {
        let common = ["--model", Self.tinyModel, "--prompt", "a lake", "--W", "768", "--H", "512", "--steps", "2", "--scheduler", "euler-a"]
        let batch = try run(common + ["--seed", "7", "--count", "3", "--grid", "-o", "lake.png"])
        XCTAssertEqual(batch.status, 0, batch.stderr)
        XCTAssertEqual(batch.stdout.split(separator: "\n").map { URL(fileURLWithPath: String($0)).lastPathComponent },
                       ["lake-7.png", "lake-8.png", "lake-9.png", "lake-grid.png"])
        XCTAssertTrue(batch.stderr.contains("picture 2 of 3: seed 8"), batch.stderr)
        XCTAssertTrue(batch.stderr.contains("picture 3/3 · step 2/2"), batch.stderr)
        let single = try run(common + ["--seed", "8", "-o", "single.png"])
        XCTAssertEqual(single.status, 0, single.stderr)
        let fromBatch = try Data(contentsOf: folder.appendingPathComponent("lake-8.png"))
        XCTAssertEqual(fromBatch, try Data(contentsOf: folder.appendingPathComponent("single.png")),
                       "picture 2 of the batch is byte for byte the render of seed 8")
        XCTAssertNotEqual(fromBatch, try Data(contentsOf: folder.appendingPathComponent("lake-7.png")))
        XCTAssertTrue(try PNG.textChunks(of: folder.appendingPathComponent("lake-9.png"))["parameters"]?.contains("Seed: 9,") == true)

        // three 768x512 pictures: 2x2 (one cell empty) is the closest to square
        let grid = try PNG.read(folder.appendingPathComponent("lake-grid.png"))
        XCTAssertEqual([grid.width, grid.height], [1536, 1024])
        let second = try PNG.read(folder.appendingPathComponent("lake-8.png"))
        let third = try PNG.read(folder.appendingPathComponent("lake-9.png"))
        for y in stride(from: 0, to: 512, by: 37) {
            let row = y * 1536 * 3
            XCTAssertTrue(grid.pixels[(row + 768 * 3)..<(row + 1536 * 3)].elementsEqual(second.pixels[(y * 768 * 3)..<((y + 1) * 768 * 3)]), "row \(y)")
            let below = (512 + y) * 1536 * 3
            XCTAssertTrue(grid.pixels[below..<(below + 768 * 3)].elementsEqual(third.pixels[(y * 768 * 3)..<((y + 1) * 768 * 3)]), "row \(y)")
            XCTAssertTrue(grid.pixels[(below + 768 * 3)..<(below + 1536 * 3)].allSatisfy { $0 == 0 }, "the empty cell is black")
        }

        // default names, one per seed
        let unnamed = try run(common + ["--seed", "20", "--count", "2", "--steps", "1"])
        XCTAssertEqual(unnamed.status, 0, unnamed.stderr)
        XCTAssertTrue(pngFiles.contains("panorama-768x512-20.png") && pngFiles.contains("panorama-768x512-21.png"), "\(pngFiles)")
    }

    func testCountErrors() throws {
        let common = ["--model", Self.tinyModel, "--prompt", "x", "--W", "512", "--H", "512", "--steps", "1"]
        try assertFails(common + ["--count", "0"], saying: ["--count must be between 1 and 10000"])
        try assertFails(common + ["--grid"], saying: ["--grid needs --count of 2 or more"])
        try assertFails(common + ["--count", "2", "--seed", "18446744073709551615"], saying: ["leaves no room for 2 consecutive seeds"])
        _ = FileManager.default.createFile(atPath: folder.appendingPathComponent("taken-5.png").path, contents: Data())
        try assertFails(common + ["--count", "2", "--seed", "4", "-o", "taken.png"], saying: ["taken-5.png exists"])
        XCTAssertFalse(pngFiles.contains("taken-4.png"), "nothing is rendered when a later name is taken")
    }
}
