import Renderer
import Schedulers
import Tensors
import XCTest

/// SpotDiffusion windows on the tiny-pano model: what moves, what stays reproducible, and that the
/// canvas-level solver history is the per-window one when nothing moves.
final class SpotDiffusionTests: XCTestCase {
    private func settings(width: Int = 1024, _ configure: (inout PanoramaSettings) -> Void = { _ in }) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: width, height: 512)
        s.steps = 4
        s.seed = 99
        s.spotDiffusion = true
        configure(&s)
        return s
    }

    func testWindowsMoveEveryStepAndTheSeedReproducesThem() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        var loop = try p.denoisingLoop(settings())
        var again = try p.denoisingLoop(settings())
        var layouts: [[Int]] = []
        while let report = loop.next() {
            _ = again.next()
            XCTAssertLessThanOrEqual(report.views, 3, "a 128-column canvas takes 2 or 3 side-by-side windows")
            layouts.append(loop.views.map(\.column))
        }
        XCTAssertGreaterThan(Set(layouts).count, 1, "the offsets never changed: \(layouts)")
        XCTAssertEqual(loop.latents.data, again.latents.data)
    }

    /// One window's canvas: every step's window is the whole canvas, so SpotDiffusion must give
    /// exactly MultiDiffusion's result, DPM-Solver's history going through the canvas.
    func testOneWindowCanvasEqualsMultiDiffusionWithDPMSolver() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        for sampler in [Sampler.ddim, .dpmSolver2MKarras] {
            var spot = try p.denoisingLoop(settings(width: 512) { $0.sampler = sampler })
            var multi = try p.denoisingLoop(settings(width: 512) { $0.sampler = sampler; $0.spotDiffusion = false })
            while spot.next() != nil { _ = multi.next() }
            XCTAssertEqual(spot.views.count, 1)
            XCTAssertLessThanOrEqual(spot.latents.maxAbsDifference(multi.latents), 1e-6, "\(sampler)")
        }
    }

    func testCompositionsRejectSpotDiffusion() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        let composition = Composition(regions: [], bootstrapSteps: 0)
        XCTAssertThrowsError(try p.regionLoop(settings(), composition: composition)) {
            XCTAssertTrue("\($0)".contains("SpotDiffusion"), "\($0)")
        }
    }
}
