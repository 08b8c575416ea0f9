import Foundation
import Models
import Renderer
import Schedulers
import Tensors
import XCTest

/// The canvas-wide noise rule of the denoising loop, with a scheduler whose step is "keep the
/// sample, add noise of standard deviation 1": after one step, latents − start is exactly the
/// noise the canvas received, whatever the UNet predicted.
final class NoiseFusionTests: XCTestCase {
    /// Keeps the sample (mean = sample) and adds unit noise at every step.
    struct UnitNoiseScheduler: Scheduler {
        typealias ViewState = NoState
        var timesteps: [Int] { [999] }
        var initNoiseSigma: Float { 1 }
        var needsNoise: Bool { true }
        func makeViewState() -> NoState { NoState() }
        func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }
        func stepMean(_ modelOutput: Tensor, timestep: Int, sample: Tensor,
                      state: inout NoState) -> (mean: Tensor, noiseScale: Float) { (sample, 1) }
        func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, state: inout NoState, noise: Tensor?) -> Tensor {
            sample.addingNoise(noise!, scale: 1)
        }
        func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor { original }
    }

    /// Standard deviation of the noise each rule leaves on a 512x1024 canvas (17 windows at stride
    /// 8, up to 8 overlapping along a row).
    func noiseStd(_ fusion: NoiseFusion, columns: Range<Int>) throws -> (std: Double, added: Tensor, generatorAfterStart: TorchGenerator) {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        var settings = PanoramaSettings(prompt: "a lake", width: 1024, height: 512)
        settings.guidanceScale = 1
        settings.seed = 5
        let guidance = try pipeline.guidance(settings)
        let (start, generator) = pipeline.seededLatents(settings)
        var loop = DenoisingLoop(unet: pipeline.model.unet, scheduler: UnitNoiseScheduler(), guidance: guidance,
                                 latents: start, tiler: ViewTiler(window: 64, stride: 8), generator: generator,
                                 noiseFusion: fusion)
        XCTAssertEqual(loop.views.count, 9)
        _ = loop.next()
        let added = loop.latents - start
        let (h, w) = (start.shape[2], start.shape[3])
        var sum = 0.0, squares = 0.0, n = 0.0
        added.withUnsafeBufferPointer { p in
            for c in 0..<start.shape[1] {
                for y in 0..<h {
                    for x in columns {
                        let v = Double(p[(c * h + y) * w + x])
                        sum += v
                        squares += v * v
                        n += 1
                    }
                }
            }
        }
        return ((squares / n - (sum / n) * (sum / n)).squareRoot(), added, generator)
    }

    func testCanvasNoiseKeepsItsStandardDeviation() throws {
        let (std, added, generator) = try noiseStd(.canvas, columns: 0..<128)
        XCTAssertEqual(std, 1, accuracy: 0.03, "canvas noise std \(std)")
        // exactly the seed's next draw, once, canvas-shaped
        var g = generator
        let expected = g.randn(added.shape)
        XCTAssertLessThanOrEqual(added.maxAbsDifference(expected), 1e-5)
    }

    /// Per-window noise averaged over the 8 windows that overlap the middle columns keeps 1/√8 of it.
    func testPerWindowNoiseShrinksWhereWindowsOverlap() throws {
        let (middle, _, _) = try noiseStd(.perWindow, columns: 56..<72)
        XCTAssertEqual(middle, 1 / 8.0.squareRoot(), accuracy: 0.04, "per-window noise std in the middle \(middle)")
        let (edge, _, _) = try noiseStd(.perWindow, columns: 0..<8)
        XCTAssertEqual(edge, 1, accuracy: 0.06, "per-window noise std at the edge (one window) \(edge)")
    }
}
