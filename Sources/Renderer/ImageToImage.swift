import Models
import Schedulers
import Tensors

extension PanoramaPipeline {
    /// The steps img2img runs at `strength`, as diffusers' img2img pipelines count them: the last
    /// ⌊steps · strength⌋ of the schedule. Returns the index of the first step to run.
    public static func firstImageToImageStep(steps: Int, strength: Double) -> Int {
        let run = min(Int(Double(steps) * strength), steps)
        return max(steps - run, 0)
    }

    static func checkStrength(_ strength: Double) throws {
        guard strength.isFinite && strength >= 0 && strength <= 1 else {
            throw RenderError.invalidSetting("strength must be between 0 and 1, not \(strength)")
        }
    }

    /// The denoising loop of an img2img pass over a whole canvas (the tiled upscaler's core):
    /// `image` [1, 3, H, W] in [-1, 1] at the settings' size is encoded in tiles (the mean of the
    /// latent distribution), noised to the first step's timestep with noise from the seed
    /// (`torch.randn` with `Generator().manual_seed(seed)`, as diffusers draws it), and then
    /// denoised by MultiDiffusion windows from that step on.
    ///
    /// diffusers' img2img samples the latent distribution instead of taking its mean; given the
    /// same latents (its `image` argument accepts them), the two agree exactly.
    /// The encode uses the settings' tiling when they decode in tiles (so with the same
    /// temporary-file format), else `VAETiling()`.
    public func imageToImageLoop(_ settings: PanoramaSettings, image: Tensor, strength: Double,
                                 journal: TiledPassJournal? = nil) throws -> DenoisingLoop<AnyScheduler> {
        try Self.checkStrength(strength)
        return try imageToImageLoop(settings, latents: try encode(image, settings, journal: journal), strength: strength)
    }

    /// `image` [1, 3, H, W] in [-1, 1] at the settings' size as img2img starts from it: with the
    /// model's VAE the mean of the tiled encode's latent distribution, scaled by its scaling factor.
    public func encode(_ image: Tensor, _ settings: PanoramaSettings, journal: TiledPassJournal? = nil) throws -> Tensor {
        let expected = [1, 3, settings.height, settings.width]
        guard image.shape == expected else {
            throw RenderError.invalidSize("the image is \(image.shape) but the settings ask for \(expected)")
        }
        return try autoencoder.encode(image, circular: settings.circular, method: settings.decodeMethod.shared(by: processes), journal: journal)
    }

    /// As `imageToImageLoop(_:image:strength:)`, from already encoded (and scaled) latents. An
    /// inpainting model gets the conditioning of "nothing known" (`nothingKnownConditioning`).
    public func imageToImageLoop(_ settings: PanoramaSettings, latents: Tensor,
                                 strength: Double) throws -> DenoisingLoop<AnyScheduler> {
        try Self.checkStrength(strength)
        try checkLatents(latents, for: settings)
        let scheduler = try makeScheduler(settings)
        let first = Self.firstImageToImageStep(steps: scheduler.timesteps.count, strength: strength)
        var generator = TorchGenerator(seed: settings.seed)
        var start = latents
        if first < scheduler.timesteps.count {
            let noise = generator.randn(latents.shape)
            start = scheduler.addNoise(latents, noise: noise, timestep: scheduler.timesteps[first])
        }
        // an inpainting model sees "nothing known", as A1111's img2img gives it without a mask
        return try makeLoop(settings, scheduler: scheduler, start: start, generator: generator, firstStep: first)
    }
}
