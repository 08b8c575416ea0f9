import Imaging
import XCTest

final class ResizeTests: XCTestCase {
    private func image(_ width: Int, _ height: Int, _ value: (Int, Int, Int) -> UInt8) -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0..<height { for x in 0..<width { for c in 0..<3 { pixels.append(value(x, y, c)) } } }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    func testSameSizeIsIdentity() {
        let a = image(17, 9) { x, y, c in UInt8((x * 37 + y * 11 + c * 5) % 256) }
        XCTAssertEqual(a.resized(width: 17, height: 9), a)
    }

    func testConstantImageStaysConstant() {
        let a = image(20, 12) { _, _, c in [200, 90, 13][c] }
        for (w, h) in [(40, 24), (7, 5), (33, 12)] {
            let b = a.resized(width: w, height: h)
            XCTAssertEqual([b.width, b.height], [w, h])
            for i in 0..<(w * h) { XCTAssertEqual(Array(b.pixels[(i * 3)..<(i * 3 + 3)]), [200, 90, 13]) }
        }
    }

    /// Halving a black/white checkerboard averages light: 50% linear intensity is sRGB 188, not
    /// the 128 of averaging code values (which the non-gamma-aware path gives).
    func testDownscalingAveragesLight() {
        let a = image(64, 64) { x, y, _ in (x + y) % 2 == 0 ? 255 : 0 }
        let linear = a.resized(width: 32, height: 32)
        let naive = a.resized(width: 32, height: 32, linearLight: false)
        let center = (16 * 32 + 16) * 3
        XCTAssertEqual(Int(linear.pixels[center]), 188, accuracy: 2)
        XCTAssertEqual(Int(naive.pixels[center]), 128, accuracy: 2)
    }

    /// Upscaling 2x and back down returns close to the original for a smooth image.
    func testUpAndDownRoundTrip() {
        let a = image(40, 30) { x, y, c in UInt8(60 + x * 3 + y * 2 + c * 10) }
        let back = a.resized(width: 80, height: 60).resized(width: 40, height: 30)
        let worst = zip(a.pixels, back.pixels).map { abs(Int($0) - Int($1)) }.max()!
        XCTAssertLessThanOrEqual(worst, 2)
    }
}

final class SharpnessTests: XCTestCase {
    func testLaplacianEnergyFallsWithBlur() {
        // A checkerboard of 1-pixel squares, then the same board averaged over 2x2 blocks (flat grey).
        let (w, h) = (16, 12)
        var sharp = [UInt8](repeating: 0, count: w * h * 3), flat = sharp
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    sharp[(y * w + x) * 3 + c] = (x + y) % 2 == 0 ? 255 : 0
                    flat[(y * w + x) * 3 + c] = 128
                }
            }
        }
        let a = RGBImage(width: w, height: h, pixels: sharp), b = RGBImage(width: w, height: h, pixels: flat)
        // Every interior pixel of the board: |4·1 − 0| or |0 − 4·1| = 4, squared 16.
        XCTAssertEqual(a.laplacianEnergy, 16, accuracy: 1e-9)
        XCTAssertEqual(b.laplacianEnergy, 0, accuracy: 1e-12)
    }
}
