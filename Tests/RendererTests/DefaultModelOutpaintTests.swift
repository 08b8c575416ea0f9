import Foundation
import Imaging
import Models
import Renderer
import Tensors
import XCTest

/// The bundled model (a 4-channel UNet, so the known region is put back after every step) extends
/// one of its own 512x512 pictures to 2048x512: the input comes back, its borders leave no seam,
/// and the new part continues it.
final class DefaultModelOutpaintTests: XCTestCase {
    struct Outcome {
        var raw: RGBImage
        var final: RGBImage
    }

    /// The input in the middle of a 2048x512 canvas, LCM-LoRA at 4 steps (guidance 1) with
    /// MultiDiffusion windows at stride 16, decoded and blended over the canvas without blur.
    static func outpaint(_ input: RGBImage, prompt: String, seed: UInt64) throws -> (layout: OutpaintLayout, outcome: Outcome) {
        let p = try DefaultModelLCMTests.pipeline()
        let layout = try OutpaintLayout(inputWidth: input.width, inputHeight: input.height, canvasWidth: 2048, canvasHeight: 512)
        var s = DefaultModelLCMTests.settings(prompt, seed: seed, width: 2048)
        s.stride = 16
        let canvas = layout.canvasImage(input)
        let mask = Tensor(shape: [1, 1, 512, 2048], data: layout.mask())
        var loop = try p.inpaintingLoop(s, image: canvas.tensor(), mask: mask, strength: 1)
        while loop.next() != nil {}
        let raw = RGBImage(decoded: try p.decode(loop.latents, circular: false))
        return (layout, Outcome(raw: raw, final: Mask.composite(generated: raw, original: canvas, mask: mask)))
    }

    /// Mean absolute difference (0–255) between two images over columns `columns`.
    static func meanDifference(_ a: RGBImage, _ b: RGBImage, columns: Range<Int>) -> Double {
        var sum = 0.0
        for y in 0..<a.height {
            for x in columns {
                let i = (y * a.width + x) * 3
                for c in 0..<3 { sum += abs(Double(a.pixels[i + c]) - Double(b.pixels[i + c])) }
            }
        }
        return sum / Double(a.height * columns.count * 3)
    }

    /// Mean colour of the top third over `columns`.
    static func skyColour(_ image: RGBImage, columns: Range<Int>) -> [Double] {
        var sum = [0.0, 0.0, 0.0]
        for y in 0..<(image.height / 3) {
            for x in columns {
                let i = (y * image.width + x) * 3
                for c in 0..<3 { sum[c] += Double(image.pixels[i + c]) }
            }
        }
        return sum.map { $0 / Double(image.height / 3 * columns.count) }
    }

    func testOutpaintingContinuesTheInputWithoutSeams() throws {
        let prompt = "snowy mountains at sunset"
        let input = try DefaultModelLCMTests.render(try DefaultModelLCMTests.pipeline(),
                                                    DefaultModelLCMTests.settings(prompt, seed: 11))
        var rows: [String] = [], worstRaw = 0.0, worstSky = 0.0
        var seamFailures: [String] = []
        for seed in UInt64(1)...5 {
            let (layout, outcome) = try Self.outpaint(input, prompt: prompt, seed: seed)
            let inside = layout.x..<(layout.x + layout.width)
            let canvas = layout.canvasImage(input)
            // the blend puts the input back exactly; the decode alone is the VAE round trip
            XCTAssertEqual(Self.meanDifference(outcome.final, canvas, columns: inside), 0)
            let raw = Self.meanDifference(outcome.raw, canvas, columns: inside)
            worstRaw = max(worstRaw, raw)
            let steps = DefaultModelTests.columnStepProfile(outcome.final)
            let left = steps[layout.x - 1], right = steps[layout.x + layout.width - 1]
            let elsewhere = steps.enumerated().filter { abs($0.offset - (layout.x - 1)) > 2 && abs($0.offset - (inside.upperBound - 1)) > 2 }
                .map(\.element).max()!
            if max(left, right) > elsewhere { seamFailures.append("seed \(seed)") }
            // the sky on either side of each border, 64 columns wide
            let pairs = [(layout.x - 64..<layout.x, layout.x..<layout.x + 64),
                         (inside.upperBound..<inside.upperBound + 64, inside.upperBound - 64..<inside.upperBound)]
            var sky = 0.0
            for (outside, within) in pairs {
                let a = Self.skyColour(outcome.final, columns: outside), b = Self.skyColour(outcome.final, columns: within)
                sky = max(sky, zip(a, b).map { abs($0 - $1) }.max()!)
            }
            worstSky = max(worstSky, sky)
            rows.append(String(format: "seed %llu: border steps %.2f/%.2f, largest elsewhere %.2f; sky distance %.1f; decode MAD %.2f",
                               seed, left, right, elsewhere, sky, raw))
        }
        print("outpaint 512 -> 2048x512:\n  " + rows.joined(separator: "\n  "))
        XCTAssertEqual(seamFailures, [], "a border step larger than every other column step")
        XCTAssertLessThanOrEqual(worstRaw, 8, "the input area as decoded, before the blend (0-255)")
        XCTAssertLessThanOrEqual(worstSky, 24, "the top third's colour across the borders (0-255 per channel)")
    }
}
