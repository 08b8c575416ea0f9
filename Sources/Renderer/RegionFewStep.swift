import Foundation
import Tensors

/// Whether a composition uses StreamMultiDiffusion's few-step region fixes (`FewStepRegions`).
public enum FewStepMode: String, Sendable, Equatable, CaseIterable, Codable {
    /// On for schedules of fewer than `FewStepRegions.automaticBelowSteps` steps, off otherwise.
    case automatic = "auto"
    case on
    case off
}

/// What a bootstrapped region sees outside its mask in the first steps.
public enum BootstrapBackground: String, Sendable, Equatable, CaseIterable, Codable {
    /// A white image's latent (StreamMultiDiffusion).
    case white
    /// A random flat colour per step and region, drawn from the seed (MultiDiffusion).
    case random
}

/// StreamMultiDiffusion's fixes for region compositions with few steps (Kim et al. 2024,
/// "StreamMultiDiffusion", §3.2–3.3). MultiDiffusion's hard masks and several bootstrap steps assume
/// fifty small steps; with four large ones a region's edge is decided in one or two steps and
/// shows as a seam, and a region bootstrapped in a window corner has no room to form.
///
/// - Quantized masks: each region's latent mask is blurred with a Gaussian of standard deviation
///   `maskStd` and, at each step, thresholded by that step's noise level √(1 − ᾱ_t): a latent
///   pixel belongs to the region when its blurred mask exceeds the level. The region starts as
///   its core at high noise and widens to (and a little past) its edge as noise falls, so the
///   background and the region blend in over the steps. The background prompt's mask is
///   1 − Σ regions at each step, clipped at 0.
/// - Centred bootstrapping: during the bootstrap steps the window a region is denoised in is
///   rolled so that the bounding box of the region's mask (under that window) sits at the
///   window's centre, where the UNet composes its subject; its prediction is rolled back before
///   the step. The background outside the mask is a white image's latent (`bootstrapBackground`).
public struct FewStepRegions: Sendable, Equatable {
    /// `FewStepMode.automatic` turns the fixes on for fewer steps than this. Eight keeps every
    /// MultiDiffusion schedule of 8 or more steps (the region goldens use 8) exactly as before.
    public static let automaticBelowSteps = 8
    /// StreamMultiDiffusion's default blur (its streaming pipeline's `default_mask_std`), in image pixels.
    public static let defaultMaskStd = 8.0
    /// Noise levels are capped here: zero-terminal-SNR schedules start at level 1, which no blurred
    /// mask exceeds; capped, a region keeps the pixels about 3·σ or more inside its edge.
    public static let maximumLevel: Float = 0.999

    /// Standard deviation of the Gaussian blur of each region's mask, in image pixels (applied to
    /// the latent mask as `maskStd` / 8 latent pixels). 0 turns mask quantization off: the plain
    /// masks at every step.
    public var maskStd: Double
    /// Roll bootstrapped windows so the region sits at their centre.
    public var centredBootstrap: Bool
    /// The background bootstrapped regions see outside their mask.
    public var bootstrapBackground: BootstrapBackground

    public init(maskStd: Double = FewStepRegions.defaultMaskStd, centredBootstrap: Bool = true,
                bootstrapBackground: BootstrapBackground = .white) {
        self.maskStd = maskStd
        self.centredBootstrap = centredBootstrap
        self.bootstrapBackground = bootstrapBackground
    }

    /// The noise level of each step, √(1 − ᾱ_t) at its timestep, capped at `maximumLevel`.
    public static func noiseLevels(alphasCumprod: [Float], timesteps: [Int]) -> [Float] {
        timesteps.map { t in Swift.min(maximumLevel, (1 - alphasCumprod[Swift.min(Swift.max(t, 0), alphasCumprod.count - 1)]).squareRoot()) }
    }

    /// A latent mask blurred with a Gaussian of standard deviation `sigma` latent pixels (kernel
    /// cut at 3σ and normalised; rows reflected at the canvas edges as torchvision's blur does,
    /// columns wrapped on a 360° canvas). `sigma` 0 returns the mask.
    public static func blurred(_ mask: [Float], rows: Int, columns: Int, sigma: Double, circular: Bool = false) -> [Float] {
        precondition(mask.count == rows * columns)
        guard sigma > 0 else { return mask }
        let radius = Int((3 * sigma).rounded(.up))
        var kernel = (-radius...radius).map { Float(exp(-Double($0 * $0) / (2 * sigma * sigma))) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        func reflect(_ i: Int, _ n: Int) -> Int {
            guard n > 1 else { return 0 }
            let period = 2 * (n - 1)
            var k = i % period
            if k < 0 { k += period }
            return k < n ? k : period - k
        }
        func wrap(_ i: Int, _ n: Int) -> Int { ((i % n) + n) % n }
        var horizontal = [Float](repeating: 0, count: mask.count)
        for y in 0..<rows {
            for x in 0..<columns {
                var sum: Float = 0
                for (k, weight) in kernel.enumerated() {
                    let j = x + k - radius
                    sum += weight * mask[y * columns + (circular ? wrap(j, columns) : reflect(j, columns))]
                }
                horizontal[y * columns + x] = sum
            }
        }
        var out = [Float](repeating: 0, count: mask.count)
        for y in 0..<rows {
            for x in 0..<columns {
                var sum: Float = 0
                for (k, weight) in kernel.enumerated() { sum += weight * horizontal[reflect(y + k - radius, rows) * columns + x] }
                out[y * columns + x] = sum
            }
        }
        return out
    }

    /// Per step, each region's quantized mask: 1 where its blurred mask exceeds the step's noise
    /// level, else 0 ([step][region][rows · columns]). With `sigma` 0 every step gets the plain masks.
    public static func quantizedMasks(_ masks: [[Float]], rows: Int, columns: Int, sigma: Double, levels: [Float],
                                      circular: Bool = false) -> [[[Float]]] {
        guard sigma > 0 else { return levels.map { _ in masks } }
        let blurred = masks.map { Self.blurred($0, rows: rows, columns: columns, sigma: sigma, circular: circular) }
        return levels.map { level in blurred.map { mask in mask.map { $0 > level ? 1 : 0 } } }
    }

    /// The roll (rows, columns) that takes the centre of the bounding box of `mask`'s non-zero
    /// pixels ([height · width]) to the window's centre, as StreamMultiDiffusion computes it
    /// (box centre ⌈(first + last)/2⌉, window centre size/2); (0, 0) for an empty mask.
    public static func centringRoll(mask: [Float], height: Int, width: Int) -> (rows: Int, columns: Int) {
        precondition(mask.count == height * width)
        var top = height, bottom = -1, left = width, right = -1
        for y in 0..<height {
            for x in 0..<width where mask[y * width + x] > 0 {
                top = Swift.min(top, y); bottom = Swift.max(bottom, y)
                left = Swift.min(left, x); right = Swift.max(right, x)
            }
        }
        guard bottom >= 0 else { return (0, 0) }
        return (height / 2 - (top + bottom + 1) / 2, width / 2 - (left + right + 1) / 2)
    }
}

extension Tensor {
    /// The [N, C, H, W] tensor rolled as `torch.roll(x, (rows, columns), dims=(-2, -1))`:
    /// out[y, x] = self[(y − rows) mod H, (x − columns) mod W].
    public func rolled(rows: Int, columns: Int) -> Tensor {
        precondition(shape.count == 4, "roll of \(shape)")
        let (h, w) = (shape[2], shape[3]), planes = shape[0] * shape[1]
        let dy = ((rows % h) + h) % h, dx = ((columns % w) + w) % w
        guard dy != 0 || dx != 0 else { return self }
        return Tensor(uninitializedShape: shape) { out in
            withUnsafeBufferPointer { src in
                for p in 0..<planes {
                    let base = p * h * w
                    for y in 0..<h {
                        let sy = (y - dy + h) % h
                        for x in 0..<w { out[base + y * w + x] = src[base + sy * w + (x - dx + w) % w] }
                    }
                }
            }
        }
    }
}

extension Composition {
    /// Whether the few-step fixes apply to a schedule of `steps` steps.
    public func usesFewStep(steps: Int) -> Bool {
        switch fewStepMode {
        case .on: return true
        case .off: return false
        case .automatic: return steps < FewStepRegions.automaticBelowSteps
        }
    }
}
