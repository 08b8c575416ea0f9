import Foundation
import Imaging
import Tensors
import XCTest

final class PNGTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("png-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    func testRoundTripWithParametersText() throws {
        let pixels = (0..<(7 * 5 * 3)).map { UInt8($0 * 3 % 256) }
        let image = RGBImage(width: 7, height: 5, pixels: pixels)
        let url = folder.appendingPathComponent("a.png")
        let parameters = "snowy mountains\nSteps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 1234, Size: 7x5, Model: m"
        try PNG.write(image, to: url, text: [(key: "parameters", value: parameters)])
        XCTAssertEqual(try PNG.read(url), image)
        XCTAssertEqual(try PNG.textChunks(of: url)["parameters"], parameters)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        XCTAssertEqual(leftovers, ["a.png"], "no temporary file is left behind")
    }

    func testDecodedTensorConversionMatchesTheDiffusersRule() {
        // (x / 2 + 0.5) clamped, * 255, rounded: -1 → 0, 1 → 255, 0 → 128 (127.5 rounds to even).
        let t = Tensor(shape: [1, 3, 1, 2], data: [-1, 1, 0, 2, -3, 0.5])
        let image = RGBImage(decoded: t)
        XCTAssertEqual(image.pixels, [0, 128, 0, 255, 255, 191])
    }

    func testUnwritableDestinationLeavesNothing() {
        let image = RGBImage(width: 1, height: 1, pixels: [1, 2, 3])
        let url = folder.appendingPathComponent("missing-folder/a.png")
        XCTAssertThrowsError(try PNG.write(image, to: url)) { error in
            XCTAssertTrue("\(error)".contains("missing-folder/a.png"), "\(error)")
        }
    }

    func testBadFilesAreReportedWithTheirPath() throws {
        let notPNG = folder.appendingPathComponent("text.png")
        try Data("hello".utf8).write(to: notPNG)
        XCTAssertThrowsError(try PNG.read(notPNG)) { XCTAssertTrue("\($0)".contains("text.png: cannot read the image: not a PNG file"), "\($0)") }

        let image = RGBImage(width: 64, height: 64, pixels: [UInt8](repeating: 90, count: 64 * 64 * 3))
        let good = folder.appendingPathComponent("good.png")
        try PNG.write(image, to: good)
        let truncated = folder.appendingPathComponent("truncated.png")
        let bytes = try Data(contentsOf: good)
        try bytes.prefix(bytes.count / 2).write(to: truncated)
        XCTAssertThrowsError(try PNG.read(truncated)) { XCTAssertTrue("\($0)".contains("truncated.png"), "\($0)") }
        XCTAssertThrowsError(try PNG.read(folder.appendingPathComponent("absent.png")))
    }
}
