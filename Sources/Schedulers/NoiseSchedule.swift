import Foundation
import Tensors
import Weights

/// The training noise schedule (betas and their cumulative alpha products), computed in float32
/// the way diffusers computes it.
public struct NoiseSchedule: Sendable, Equatable {
    public let betas: [Float]
    public let alphasCumprod: [Float]

    public init(config c: DDIMSchedulerConfig) throws {
        let n = c.numTrainTimesteps
        var betas: [Float]
        if let trained = c.trainedBetas {
            betas = trained.map { Float($0) }
        } else {
            switch c.betaSchedule {
            case "linear":
                betas = torchLinspace(Float(c.betaStart), Float(c.betaEnd), n)
            case "scaled_linear":
                betas = torchLinspace(Float(c.betaStart.squareRoot()), Float(c.betaEnd.squareRoot()), n).map { $0 * $0 }
            case "squaredcos_cap_v2":
                func alphaBar(_ t: Double) -> Double {
                    let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
                    return c * c
                }
                betas = (0..<n).map { i in
                    let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
                    return Float(min(1 - alphaBar(t2) / alphaBar(t1), 0.999))
                }
            default:
                throw SchedulerError.unsupported("beta_schedule \"\(c.betaSchedule)\"")
            }
        }
        if c.rescaleBetasZeroSnr { betas = rescaledForZeroTerminalSNR(betas) }
        self.betas = betas
        alphasCumprod = cumulativeProduct(betas.map { 1 - $0 })
    }
}

extension NoiseSchedule {
    /// √ᾱ_t · x + √(1 − ᾱ_t) · noise: forward diffusion to `timestep` (diffusers' `add_noise` of
    /// the ᾱ-parameterised schedulers: DDIM, LCM, TCD).
    public func addNoise(_ original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        precondition(original.shape == noise.shape, "addNoise: \(original.shape) vs \(noise.shape)")
        let a = alphasCumprod[timestep]
        let sa = a.squareRoot(), sb = (1 - a).squareRoot()
        return Tensor(shape: original.shape, data: zip(original.data, noise.data).map { sa * $0 + sb * $1 })
    }

    /// ᾱ as the σ-based schedulers (DPM-Solver, Euler) use it: under zero terminal SNR the last
    /// one is 2⁻²⁴ instead of 0, as in diffusers, so the first σ is finite.
    static func alphasCumprodForSigmas(_ config: DDIMSchedulerConfig) throws -> [Float] {
        var ac = try NoiseSchedule(config: config).alphasCumprod
        if config.rescaleBetasZeroSnr { ac[ac.count - 1] = 0x1p-24 }
        return ac
    }
}

extension DDIMSchedulerConfig {
    /// `timestep_spacing` as diffusers' `from_config` resolves it for a scheduler class whose own
    /// default is `classDefault`: the file's value when it names one.
    func timestepSpacing(classDefault: String) -> String {
        timestepSpacingIsExplicit ? timestepSpacing : classDefault
    }
}

/// "trailing" timestep spacing (numpy's `arange(n, 0, -n / steps).round() - 1`), the same in
/// every diffusers scheduler.
func trailingTimesteps(trainSteps n: Int, steps: Int) -> [Int] {
    let ratio = Double(n) / Double(steps)
    let count = Int((Double(n) / ratio).rounded(.up))
    return (0..<count).map { Int((Double(n) - Double($0) * ratio).rounded(.toNearestOrEven)) - 1 }
}

/// `torch.linspace` in float32: computed from both ends toward the middle, as torch does.
func torchLinspace(_ start: Float, _ end: Float, _ count: Int) -> [Float] {
    guard count > 1 else { return [start] }
    let step = (end - start) / Float(count - 1)
    let half = count / 2
    return (0..<count).map { i in
        i < half ? start + step * Float(i) : end - step * Float(count - i - 1)
    }
}

/// `torch.cumprod` of float32 values on the CPU: the running product is kept in double and each
/// output rounded to float (a float running product drifts from it by up to ~5e-7 relative over
/// 1000 steps, which the cancellation of Euler a's first step under zero terminal SNR, σ = 4096,
/// magnifies to ~1e-4).
func cumulativeProduct(_ values: [Float]) -> [Float] {
    var product: Double = 1
    return values.map { v in
        product *= Double(v)
        return Float(product)
    }
}

/// "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al.), algorithm 1:
/// shift and scale sqrt(ᾱ) so the last timestep has zero signal.
private func rescaledForZeroTerminalSNR(_ betas: [Float]) -> [Float] {
    var sqrtBar = cumulativeProduct(betas.map { 1 - $0 }).map { $0.squareRoot() }
    let first = sqrtBar[0], last = sqrtBar[sqrtBar.count - 1]
    for i in sqrtBar.indices {
        sqrtBar[i] -= last
        sqrtBar[i] *= first / (first - last)
    }
    let bar = sqrtBar.map { $0 * $0 }
    var alphas = [bar[0]]
    for i in 1..<bar.count { alphas.append(bar[i] / bar[i - 1]) }
    return alphas.map { 1 - $0 }
}
