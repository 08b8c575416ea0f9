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
    /// MultiDiffusion windows at stride 16, at `panorama outpaint`'s defaults for a 4-channel model:
    /// strength 0.9 (the new area starts from the input's border colours stretched outwards) and
    /// the decode faded into the input with a mask blur of 4.
    static func outpaint(_ input: RGBImage, prompt: String, seed: UInt64,
                         strength: Double = 0.9) throws -> (layout: OutpaintLayout, outcome: Outcome) {
        let p = try DefaultModelLCMTests.pipeline()
        let layout = try OutpaintLayout(inputWidth: input.width, inputHeight: input.height, canvasWidth: 2048, canvasHeight: 512)
        var s = DefaultModelLCMTests.settings(prompt, seed: seed, width: 2048)
        s.stride = 16
        let canvas = layout.canvasImage(input)
        let mask = Tensor(shape: [1, 1, 512, 2048], data: layout.mask())
        var loop = try p.inpaintingLoop(s, image: canvas.tensor(), mask: mask, strength: strength)
        while loop.next() != nil {}
        let raw = RGBImage(decoded: try p.decode(loop.latents, circular: false))
        return (layout, Outcome(raw: raw, final: Mask.composite(generated: raw, original: canvas,
                                                                mask: layout.overlayMask(blur: 4))))
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
        var rows: [String] = [], worstRaw = 0.0
        var seamFailures: [String] = [], worstSky = 0.0
        for seed in UInt64(1)...5 {
            let (layout, outcome) = try Self.outpaint(input, prompt: prompt, seed: seed)
            let inside = layout.x..<(layout.x + layout.width)
            let canvas = layout.canvasImage(input)
            // the blend puts the input back exactly; the decode alone is the VAE round trip
            XCTAssertEqual(Self.meanDifference(outcome.final, canvas, columns: (inside.lowerBound + 24)..<(inside.upperBound - 24)), 0)
            let raw = Self.meanDifference(outcome.raw, canvas, columns: inside)
            worstRaw = max(worstRaw, raw)
            let steps = DefaultModelTests.columnStepProfile(outcome.final)
            let left = steps[layout.x - 1], right = steps[layout.x + layout.width - 1]
            let elsewhere = steps.enumerated().filter { abs($0.offset - (layout.x - 1)) > 2 && abs($0.offset - (inside.upperBound - 1)) > 2 }
                .map(\.element).max()!
            if max(left, right) > elsewhere { seamFailures.append("seed \(seed)") }
            // the sky on either side of each border (64 columns each) against every other pair
            // of neighbouring 64-column blocks of the picture
            func skyDistance(_ a: Range<Int>, _ b: Range<Int>) -> Double {
                zip(Self.skyColour(outcome.final, columns: a), Self.skyColour(outcome.final, columns: b)).map { abs($0 - $1) }.max()!
            }
            let sky = max(skyDistance(layout.x - 64..<layout.x, layout.x..<layout.x + 64),
                          skyDistance(inside.upperBound - 64..<inside.upperBound, inside.upperBound..<inside.upperBound + 64))
            let borders = [layout.x, inside.upperBound]
            let skyElsewhere = stride(from: 64, to: 2048 - 63, by: 64).filter { b in borders.allSatisfy { abs($0 - b) >= 64 } }
                .map { skyDistance($0 - 64..<$0, $0..<$0 + 64) }.max()!
            worstSky = max(worstSky, sky)
            let rawSteps = DefaultModelTests.columnStepProfile(outcome.raw)
            rows.append(String(format: "seed %llu: border steps %.2f/%.2f (decoded alone %.2f/%.2f), largest elsewhere %.2f; sky distance %.1f (largest elsewhere %.1f); decode MAD %.2f",
                               seed, left, right, rawSteps[layout.x - 1], rawSteps[layout.x + layout.width - 1], elsewhere, sky,
                               skyElsewhere, raw))
        }
        print("outpaint 512 -> 2048x512:\n  " + rows.joined(separator: "\n  "))
        XCTAssertEqual(seamFailures, [], "a border step larger than every other column step")
        XCTAssertLessThanOrEqual(worstRaw, 8, "the input area as decoded, before the blend (0-255)")
        // This prompt's skies vary as much from block to block (largest 18-27 levels) as across the
        // borders, so this bound is loose; testOutpaintingContinuesANightSky is the sharp check.
        XCTAssertLessThanOrEqual(worstSky, 40, "the top third's colour across the borders (0-255 per channel)")
    }

    /// A night picture extended under a prompt that does not say night: the new sky next to each
    /// border stays within 16 levels (per channel) of the input's, where the same prompt rendered
    /// without the input lies far from it; at strength 1 (the replacement rule alone) it does not.
    func testOutpaintingContinuesANightSky() throws {
        let input = try DefaultModelLCMTests.render(try DefaultModelLCMTests.pipeline(),
                                                    DefaultModelLCMTests.settings("a calm sea at night", seed: 11))
        func sky(_ image: RGBImage, _ columns: Range<Int>) -> [Double] { Self.skyColour(image, columns: columns) }
        func distance(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map { abs($0 - $1) }.max()! }
        let inputSky = sky(input, 0..<512)
        var rows: [String] = [], worst = 0.0, worstFromNoise = 0.0, nearestUnrelated = Double.infinity
        for seed in UInt64(1)...3 {
            let (layout, outcome) = try Self.outpaint(input, prompt: "a calm sea", seed: seed)
            let outside = [layout.x - 64..<layout.x, layout.x + layout.width..<layout.x + layout.width + 64]
            let d = outside.map { distance(sky(outcome.final, $0), inputSky) }.max()!
            let fromNoise = try Self.outpaint(input, prompt: "a calm sea", seed: seed, strength: 1).outcome.final
            let dNoise = outside.map { distance(sky(fromNoise, $0), inputSky) }.max()!
            var plain = DefaultModelLCMTests.settings("a calm sea", seed: seed, width: 2048)
            plain.stride = 16
            let unrelated = try DefaultModelLCMTests.render(try DefaultModelLCMTests.pipeline(), plain)
            let dPlain = outside.map { distance(sky(unrelated, $0), inputSky) }.min()!
            worst = max(worst, d)
            worstFromNoise = max(worstFromNoise, dNoise)
            nearestUnrelated = min(nearestUnrelated, dPlain)
            rows.append(String(format: "seed %llu: new sky beside the input %.1f from the input's; strength 1: %.1f; without the input: %.1f",
                               seed, d, dNoise, dPlain))
        }
        print("outpaint night -> \"a calm sea\":\n  " + rows.joined(separator: "\n  "))
        XCTAssertLessThanOrEqual(worst, 16)
        XCTAssertGreaterThan(nearestUnrelated, 3 * 16, "the statistic separates continuing from not")
    }
}
