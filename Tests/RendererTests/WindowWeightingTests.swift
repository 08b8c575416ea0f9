import Foundation
import Renderer
import Tensors
import XCTest

final class WindowWeightingTests: XCTestCase {
    func testWeights() throws {
        XCTAssertNil(WindowWeighting.uniform.weights(height: 64, width: 64))
        let w = try XCTUnwrap(WindowWeighting.gaussian.weights(height: 64, width: 64))
        XCTAssertEqual(w.count, 64 * 64)
        // Symmetric, largest at the centre, about exp(-12) of it at the corners' edges.
        XCTAssertEqual(w[0], w[63])
        XCTAssertEqual(w[0], w[63 * 64 + 63])
        XCTAssertEqual(w.max(), w[31 * 64 + 31])
        XCTAssertLessThan(w[0], 1e-9)
        XCTAssertGreaterThan(w[31 * 64 + 31], 0.99)
    }

    func testNames() {
        XCTAssertEqual(WindowWeighting(name: "uniform"), .uniform)
        XCTAssertEqual(WindowWeighting(name: "gaussian"), .gaussian(sigma: 0.1))
        XCTAssertEqual(WindowWeighting(name: "gaussian:0.25"), .gaussian(sigma: 0.25))
        XCTAssertEqual(WindowWeighting.gaussian(sigma: 0.25).name, "gaussian(0.25)")
        for bad in ["gauss", "gaussian:0", "gaussian:-1", "gaussian:x", ""] {
            XCTAssertNil(WindowWeighting(name: bad), bad)
        }
    }

    /// One window covering the canvas: the weights cancel in value / count.
    func testSingleWindowIsUnchanged() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        var s = PanoramaSettings(prompt: "snowy mountains", width: 512, height: 512)
        s.steps = 2
        s.seed = 5
        var uniform = try p.denoisingLoop(s)
        while uniform.next() != nil {}
        s.windowWeighting = .gaussian
        var gaussian = try p.denoisingLoop(s)
        while gaussian.next() != nil {}
        XCTAssertLessThanOrEqual(gaussian.latents.maxAbsDifference(uniform.latents), 1e-5 * uniform.latents.maxAbs)
    }

    /// Overlapping windows: a different average, and every canvas pixel still defined.
    func testOverlappingWindowsAreReweighted() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        var s = PanoramaSettings(prompt: "snowy mountains", width: 1024, height: 512)
        s.steps = 2
        s.seed = 5
        s.stride = 16
        var uniform = try p.denoisingLoop(s)
        while uniform.next() != nil {}
        s.windowWeighting = .gaussian
        var gaussian = try p.denoisingLoop(s)
        while gaussian.next() != nil {}
        XCTAssertTrue(gaussian.latents.data.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(gaussian.latents.maxAbsDifference(uniform.latents), 1e-3)
    }
}
