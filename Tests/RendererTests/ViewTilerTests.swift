import Renderer
import Tensors
import XCTest

final class ViewTilerTests: XCTestCase {
    func testCountsFromTheDesignNotes() {
        let plain = ViewTiler(window: 64, stride: 8)
        XCTAssertEqual(plain.views(height: 64, width: 512).count, 57)
        XCTAssertEqual(plain.views(height: 64, width: 256).count, 25)
        XCTAssertEqual(plain.views(height: 96, width: 512).count, 285)
        XCTAssertEqual(ViewTiler(window: 64, stride: 8, circular: true).views(height: 64, width: 512).count, 64)
    }

    func testShiftedViewsTileWithoutOverlapInside() {
        let tiler = ViewTiler(window: 64, stride: 8)
        XCTAssertEqual(tiler.shiftedViews(height: 64, width: 512, shift: (0, 0)).map(\.column), Array(stride(from: 0, to: 512, by: 64)))
        // cut by the edges: moved flush with them
        XCTAssertEqual(tiler.shiftedViews(height: 64, width: 512, shift: (0, 20)).map(\.column),
                       [0, 20, 84, 148, 212, 276, 340, 404, 448])
        // taller canvas: rows shift too, and never wrap
        let tall = tiler.shiftedViews(height: 96, width: 128, shift: (10, 0))
        XCTAssertEqual(Set(tall.map(\.row)), [0, 10, 32])
        for width in [64, 100, 500, 512] {
            for shift in [0, 1, 37, 63] {
                var fuser = Fuser(channels: 1, height: 64, width: width)
                let views = tiler.shiftedViews(height: 64, width: width, shift: (0, shift))
                for v in views { fuser.add(Tensor(repeating: 1, shape: [1, 1, 64, 64]), at: v) }
                XCTAssertEqual(fuser.uncoveredPixels, 0, "width \(width), shift \(shift)")
                XCTAssertLessThanOrEqual(views.count, (width + 63) / 64 + 1)
            }
        }
    }

    func testShiftedViewsWrapIn360Mode() {
        let tiler = ViewTiler(window: 64, stride: 8, circular: true)
        XCTAssertEqual(tiler.shiftedViews(height: 64, width: 256, shift: (0, 100)).map(\.column), [36, 100, 164, 228])
        // 300 is not a multiple of 64: five windows, the last overlapping the first past the seam
        XCTAssertEqual(tiler.shiftedViews(height: 64, width: 300, shift: (0, 5)).map(\.column), [5, 69, 133, 197, 261])
    }

    func testEveryLatentPixelIsCoveredWhenTheStrideDoesNotDivide() {
        // W = 4000: 500 latent columns; (500 - 64) is not a multiple of 8, diffusers leaves 4 columns bare.
        let views = ViewTiler(window: 64, stride: 8).views(height: 64, width: 500)
        var fuser = Fuser(channels: 1, height: 64, width: 500)
        for v in views { fuser.add(Tensor(repeating: 1, shape: [1, 1, 64, 64]), at: v) }
        XCTAssertEqual(fuser.uncoveredPixels, 0)
        XCTAssertEqual(views.last, LatentView(row: 0, column: 436, height: 64, width: 64))
        XCTAssertEqual(views.count, 56)
    }

    func testCircularViewsWrapAndCropWraps() {
        let views = ViewTiler(window: 4, stride: 2, circular: true).views(height: 4, width: 6)
        XCTAssertEqual(views.map(\.column), [0, 2, 4])
        XCTAssertEqual(ViewTiler(window: 4, stride: 2, circular: true).views(height: 4, width: 7).map(\.column), [0, 2, 4])
        let canvas = Tensor(shape: [1, 1, 4, 6], data: (0..<24).map(Float.init))
        let last = canvas.crop(views[2])
        XCTAssertEqual(Array(last.data[0..<4]), [4, 5, 0, 1])
    }

    func testFuserAveragesWeightedOverlaps() {
        var fuser = Fuser(channels: 1, height: 1, width: 3)
        fuser.add(Tensor(shape: [1, 1, 1, 2], data: [2, 4]), at: LatentView(row: 0, column: 0, height: 1, width: 2))
        fuser.add(Tensor(shape: [1, 1, 1, 2], data: [8, 6]), at: LatentView(row: 0, column: 1, height: 1, width: 2),
                  weight: [3, 1])
        XCTAssertEqual(fuser.fused().data, [2, (4 + 3 * 8) / 4, 6])
    }

    func testCircularFusionAtAnyHeight() {
        // Rows of wrapped windows land on their own rows (diffusers mixes them up above 512 pixels).
        let tiler = ViewTiler(window: 4, stride: 2, circular: true)
        let views = tiler.views(height: 6, width: 6)
        let canvas = Tensor(shape: [1, 1, 6, 6], data: (0..<36).map(Float.init))
        var fuser = Fuser(channels: 1, height: 6, width: 6)
        for v in views { fuser.add(canvas.crop(v), at: v) }
        XCTAssertEqual(fuser.fused(), canvas)
    }
}
