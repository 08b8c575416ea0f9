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
