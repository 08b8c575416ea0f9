/// How the windows of a stochastic step (LCM, TCD with η > 0, Euler a, DDIM with η > 0) get their
/// fresh noise.
///
/// A stochastic step is a noise-free mean plus σ·z with fresh Gaussian z. MultiDiffusion averages
/// N overlapping windows; if each window draws its own z, the average holds noise of standard
/// deviation σ/√N where the sampler expects σ, and the picture comes out blurred, the more so the
/// fewer and larger the steps (StreamMultiDiffusion, Kim et al. 2024, §3). `.canvas` fuses the
/// windows' means, which equals fusing their denoised predictions since the mean is linear in them,
/// and then adds σ·z once, with one canvas-shaped draw from the seed's generator per step. With one
/// window both rules draw the same numbers in the same order, and the result is diffusers' exactly.
public enum NoiseFusion: String, Sendable, Equatable, CaseIterable, Codable {
    /// Fuse the means, then add one canvas-wide noise (the default).
    case canvas
    /// Step every window with its own noise, then average (diffusers' panorama pipeline).
    case perWindow = "per-window"
}
