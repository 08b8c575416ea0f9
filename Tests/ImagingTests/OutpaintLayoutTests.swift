import Imaging
import XCTest

final class OutpaintLayoutTests: XCTestCase {
    func testScalesToTheCanvasHeightAndAnchors() throws {
        let centre = try OutpaintLayout(inputWidth: 600, inputHeight: 400, canvasWidth: 2048, canvasHeight: 512)
        XCTAssertEqual([centre.width, centre.height], [768, 512])
        XCTAssertEqual([centre.x, centre.y], [640, 0])
        XCTAssertEqual(centre.x % 8, 0)
        let odd = try OutpaintLayout(inputWidth: 500, inputHeight: 512, canvasWidth: 2048, canvasHeight: 512)
        XCTAssertEqual(odd.x, (2048 - 500) / 2 / 8 * 8, "centre rounded down to a latent pixel")
        let left = try OutpaintLayout(inputWidth: 512, inputHeight: 512, canvasWidth: 2048, canvasHeight: 512, anchor: .left)
        XCTAssertEqual([left.x, left.y], [0, 0])
        let right = try OutpaintLayout(inputWidth: 512, inputHeight: 512, canvasWidth: 2048, canvasHeight: 512, anchor: .right)
        XCTAssertEqual(right.x, 1536)
        let kept = try OutpaintLayout(inputWidth: 300, inputHeight: 200, canvasWidth: 1024, canvasHeight: 512,
                                      anchor: .point(x: 16, y: 24), keepSize: true)
        XCTAssertEqual([kept.x, kept.y, kept.width, kept.height], [16, 24, 300, 200])
    }

    func testAnchorsParse() {
        XCTAssertEqual(OutpaintLayout.Anchor("left"), .left)
        XCTAssertEqual(OutpaintLayout.Anchor("Centre"), .center)
        XCTAssertEqual(OutpaintLayout.Anchor("64, 8"), .point(x: 64, y: 8))
        XCTAssertNil(OutpaintLayout.Anchor("middle"))
        XCTAssertNil(OutpaintLayout.Anchor("1,2,3"))
        XCTAssertEqual(OutpaintLayout.Anchor.point(x: 64, y: 8).description, "64,8")
    }

    func testRefusesWhatCannotWork() {
        func message(_ body: () throws -> OutpaintLayout) -> String {
            do { _ = try body(); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(message { try OutpaintLayout(inputWidth: 3000, inputHeight: 512, canvasWidth: 2048, canvasHeight: 512) }
            .contains("larger than the 2048x512 canvas"))
        XCTAssertTrue(message { try OutpaintLayout(inputWidth: 2048, inputHeight: 512, canvasWidth: 2048, canvasHeight: 512) }
            .contains("already fills the canvas"))
        XCTAssertTrue(message { try OutpaintLayout(inputWidth: 512, inputHeight: 512, canvasWidth: 2048, canvasHeight: 512,
                                                   anchor: .point(x: 1600, y: 0)) }.contains("x can be 0-1536"))
        XCTAssertTrue(message { try OutpaintLayout(inputWidth: 600, inputHeight: 600, canvasWidth: 2048, canvasHeight: 512,
                                                   keepSize: true) }.contains("larger than"))
    }

    func testMaskAndOverlap() throws {
        let layout = try OutpaintLayout(inputWidth: 8, inputHeight: 4, canvasWidth: 24, canvasHeight: 4, anchor: .left)
        let mask = layout.mask()
        XCTAssertEqual(mask.count, 24 * 4)
        XCTAssertEqual(mask[0..<24].map { Int($0) }, Array(repeating: 0, count: 8) + Array(repeating: 1, count: 16))
        // the overlap shrinks only the side that meets generated area
        let band = layout.mask(overlap: 2)
        XCTAssertEqual(band[0..<24].map { Int($0) }, Array(repeating: 0, count: 6) + Array(repeating: 1, count: 18))
        // on a 360° canvas the left side meets the wrap
        let wrap = try OutpaintLayout(inputWidth: 8, inputHeight: 4, canvasWidth: 24, canvasHeight: 4, anchor: .left, circular: true)
        XCTAssertEqual(wrap.mask(overlap: 2)[0..<24].map { Int($0) },
                       [1, 1] + Array(repeating: 0, count: 4) + Array(repeating: 1, count: 18))
    }

    func testCanvasImageStretchesTheEdges() throws {
        let input = RGBImage(width: 2, height: 1, pixels: [10, 20, 30, 40, 50, 60])
        let layout = try OutpaintLayout(inputWidth: 2, inputHeight: 1, canvasWidth: 5, canvasHeight: 1,
                                        anchor: .point(x: 1, y: 0), keepSize: true)
        XCTAssertEqual(layout.canvasImage(input).pixels,
                       [10, 20, 30, 10, 20, 30, 40, 50, 60, 40, 50, 60, 40, 50, 60])
    }
}
