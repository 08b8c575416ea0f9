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
        XCTAssertEqual(WindowWeighting.gaussian(sigma: 0.25).name, "gaussian:0.25")
        for w in [WindowWeighting.uniform, .gaussian, .gaussian(sigma: 0.25)] {
            XCTAssertEqual(WindowWeighting(name: w.name), w, "the name reads back")
        }
        for bad in ["gauss", "gaussian:0", "gaussian:-1", "gaussian:x", ""] {
            XCTAssertNil(WindowWeighting(name: bad), bad)
        }
    }

    /// Final latents of a 2-step tiny-pano render with uniform and with Gaussian window weights.
    private func bothWeightings(width: Int, stride: Int) throws -> (uniform: Tensor, gaussian: Tensor) {
        let p = try PanoramaParityTests.sharedPipeline()
        var s = PanoramaSettings(prompt: "snowy mountains", width: width, height: 512)
        s.steps = 2
        s.seed = 5
        s.stride = stride
        let results = try [WindowWeighting.uniform, .gaussian].map { weighting in
            s.windowWeighting = weighting
            var loop = try p.denoisingLoop(s)
            while loop.next() != nil {}
            return loop.latents
        }
        return (results[0], results[1])
    }

    /// One window covering the canvas: the weights cancel in value / count.
    func testSingleWindowIsUnchanged() throws {
        let (uniform, gaussian) = try bothWeightings(width: 512, stride: 8)
        XCTAssertLessThanOrEqual(gaussian.maxAbsDifference(uniform), 1e-5 * uniform.maxAbs)
    }

    /// Overlapping windows: a different average, and every canvas pixel still defined.
    func testOverlappingWindowsAreReweighted() throws {
        let (uniform, gaussian) = try bothWeightings(width: 1024, stride: 16)
        XCTAssertTrue(gaussian.data.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(gaussian.maxAbsDifference(uniform), 1e-3)
    }
}
