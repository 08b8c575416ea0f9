import Models
import Schedulers
import Tensors

/// The known content of an inpainting or outpainting request, at latent size, built as diffusers'
/// `StableDiffusionInpaintPipeline` builds it (see `PanoramaPipeline.inpaintingInput`).
public struct InpaintingInput: Sendable {
    /// The whole image's latents [1, C, h, w]: the mean of the encode, scaled by the VAE's factor.
    public var imageLatents: Tensor
    /// The binarised mask reduced to latent size [1, 1, h, w]: 1 where the model paints, 0 where
    /// the image is kept.
    public var latentMask: Tensor
    /// The latents of the image with the repainted region set to 0 (grey), [1, C, h, w]; what an
    /// inpainting (9-channel) UNet sees. nil for a 4-channel model, which does not use them.
    public var maskedImageLatents: Tensor?

    public init(imageLatents: Tensor, latentMask: Tensor, maskedImageLatents: Tensor?) {
        precondition(latentMask.shape == [1, 1] + imageLatents.shape.dropFirst(2),
                     "latent mask \(latentMask.shape) does not match the latents \(imageLatents.shape)")
        precondition(maskedImageLatents.map { $0.shape == imageLatents.shape } ?? true,
                     "masked-image latents \(maskedImageLatents!.shape) do not match \(imageLatents.shape)")
        self.imageLatents = imageLatents
        self.latentMask = latentMask
        self.maskedImageLatents = maskedImageLatents
    }

    /// A pixel mask [1, 1, H, W] in [0, 1] binarised at 0.5 as diffusers' mask processor does it
    /// (values ≥ 0.5 become 1, the rest 0), so a soft edge becomes a hard one.
    public static func binarized(_ mask: Tensor) -> Tensor {
        Tensor(shape: mask.shape, data: mask.data.map { $0 >= 0.5 ? 1 : 0 })
    }

    /// `image` [1, 3, H, W] with the pixels of `binaryMask` (1 = repaint) set to 0, diffusers'
    /// `image * (mask < 0.5)`.
    public static func maskedImage(_ image: Tensor, binaryMask: Tensor) -> Tensor {
        let plane = binaryMask.count
        precondition(image.count == 3 * plane, "image \(image.shape) and mask \(binaryMask.shape) differ in size")
        var out = image
        out.withUnsafeMutableBufferPointer { o in
            binaryMask.withUnsafeBufferPointer { m in
                for c in 0..<3 { for i in 0..<plane where !(m[i] < 0.5) { o[c * plane + i] = 0 } }
            }
        }
        return out
    }

    /// A [1, 1, H, W] mask at [1, 1, h, w] by nearest neighbour as `torch.nn.functional.interpolate`
    /// does by default: output pixel (i, j) takes input pixel (⌊i·H/h⌋, ⌊j·W/w⌋).
    public static func nearest(_ mask: Tensor, height h: Int, width w: Int) -> Tensor {
        let (H, W) = (mask.shape[2], mask.shape[3])
        // torch computes the scale in float, then floors; with H = 8h it is exact either way
        let (sy, sx) = (Float(H) / Float(h), Float(W) / Float(w))
        return Tensor(uninitializedShape: [1, 1, h, w]) { out in
            mask.withUnsafeBufferPointer { m in
                for i in 0..<h {
                    let y = min(Int((Float(i) * sy).rounded(.down)), H - 1)
                    for j in 0..<w { out[i * w + j] = m[y * W + min(Int((Float(j) * sx).rounded(.down)), W - 1)] }
                }
            }
        }
    }
}

/// What a 4-channel model keeps of a known image while it denoises: diffusers' inpainting rule.
/// After every step the fused canvas becomes `(1 − m)·addNoise(image, noise, t_next) + m·latents`,
/// with the starting noise and the next step's timestep; after the last step the clean image.
public struct KnownRegion: Sendable {
    /// The clean image latents [1, C, h, w].
    public var imageLatents: Tensor
    /// [1, 1, h, w], 1 where the model paints.
    public var mask: Tensor
    /// The noise the loop started from [1, C, h, w] (re-used at every step, as diffusers does).
    public var noise: Tensor

    public init(imageLatents: Tensor, mask: Tensor, noise: Tensor) {
        precondition(noise.shape == imageLatents.shape && mask.shape == [1, 1] + imageLatents.shape.dropFirst(2),
                     "known region: image \(imageLatents.shape), mask \(mask.shape), noise \(noise.shape)")
        self.imageLatents = imageLatents
        self.mask = mask
        self.noise = noise
    }

    /// `latents` with the known region put back, noised to `nextTimestep` (nil: clean).
    public func blended<S: Scheduler>(into latents: Tensor, scheduler: S, nextTimestep: Int?) -> Tensor {
        let known = nextTimestep.map { scheduler.addNoise(imageLatents, noise: noise, timestep: $0) } ?? imageLatents
        let plane = mask.count, channels = latents.shape[1]
        return Tensor(uninitializedShape: latents.shape) { out in
            latents.withUnsafeBufferPointer { x in
                known.withUnsafeBufferPointer { k in
                    mask.withUnsafeBufferPointer { m in
                        for c in 0..<channels {
                            for i in 0..<plane {
                                let j = c * plane + i
                                out[j] = (1 - m[i]) * k[j] + m[i] * x[j]
                            }
                        }
                    }
                }
            }
        }
    }
}

extension PanoramaPipeline {
    /// The known content of `image` [1, 3, H, W] in [-1, 1] under `mask` [1, 1, H, W] in [0, 1]
    /// (1 = repaint) at the settings' size, as diffusers' `StableDiffusionInpaintPipeline` prepares
    /// it: the mask binarised at 0.5; the masked image `image · (mask < 0.5)`; the mask reduced to
    /// latent size by nearest neighbour (`F.interpolate`'s default). Both encodes take the mean of
    /// the latent distribution (diffusers samples it; see `inpaintingLoop`) with the pipeline's
    /// autoencoder, as `encode(_:_:)` does. The masked image is encoded only for an inpainting UNet.
    public func inpaintingInput(_ settings: PanoramaSettings, image: Tensor, mask: Tensor) throws -> InpaintingInput {
        let expected = [1, 1, settings.height, settings.width]
        guard mask.shape == expected else {
            throw RenderError.invalidSize("the mask is \(mask.shape) but the settings ask for \(expected)")
        }
        let imageLatents = try encode(image, settings)
        let binary = InpaintingInput.binarized(mask)
        let latentMask = InpaintingInput.nearest(binary, height: imageLatents.shape[2], width: imageLatents.shape[3])
        let masked = model.isInpainting
            ? try encode(InpaintingInput.maskedImage(image, binaryMask: binary), settings) : nil
        return InpaintingInput(imageLatents: imageLatents, latentMask: latentMask, maskedImageLatents: masked)
    }

    /// The denoising loop of an inpainting (or outpainting) pass over the whole canvas, with
    /// MultiDiffusion windows (or SpotDiffusion, circular) as the other loops: `image` [1, 3, H, W]
    /// in [-1, 1] and `mask` [1, 1, H, W] in [0, 1] (1 = repaint) at the settings' size.
    ///
    /// As diffusers' `StableDiffusionInpaintPipeline`: the first `torch.randn` of the seed's
    /// generator is the noise; at strength 1 the start is that noise times the scheduler's initial
    /// sigma, else the image latents noised to the first step's timestep (the last
    /// ⌊steps · strength⌋ steps run, as in img2img). An inpainting (9-channel) UNet gets the latent
    /// mask and masked-image latents after every window's latents (`DenoisingLoop.conditioning`)
    /// and nothing is replaced; a 4-channel UNet keeps the known region
    /// (`DenoisingLoop.knownRegion`).
    ///
    /// diffusers samples the VAE's latent distributions with the generator, which moves it before
    /// the noise is drawn; this takes their means. With the means (its `retrieve_latents` in
    /// "argmax" mode) the two agree.
    public func inpaintingLoop(_ settings: PanoramaSettings, image: Tensor, mask: Tensor,
                               strength: Double) throws -> DenoisingLoop<AnyScheduler> {
        try Self.checkStrength(strength)
        return try inpaintingLoop(settings, input: inpaintingInput(settings, image: image, mask: mask), strength: strength)
    }

    /// As `inpaintingLoop(_:image:mask:strength:)`, from already prepared known content.
    public func inpaintingLoop(_ settings: PanoramaSettings, input: InpaintingInput,
                               strength: Double) throws -> DenoisingLoop<AnyScheduler> {
        try Self.checkStrength(strength)
        try checkLatents(input.imageLatents, for: settings)
        guard !model.isInpainting || input.maskedImageLatents != nil else {
            throw RenderError.invalidSetting("an inpainting model needs the masked image's latents")
        }
        let scheduler = try makeScheduler(settings)
        let first = Self.firstImageToImageStep(steps: scheduler.timesteps.count, strength: strength)
        guard first < scheduler.timesteps.count else {
            throw RenderError.invalidSetting("strength \(strength) with \(settings.steps) steps leaves no step to run")
        }
        var generator = TorchGenerator(seed: settings.seed)
        let noise = generator.randn(input.imageLatents.shape)
        let start = strength == 1 ? noise * scheduler.initNoiseSigma
            : scheduler.addNoise(input.imageLatents, noise: noise, timestep: scheduler.timesteps[first])
        if model.isInpainting, let masked = input.maskedImageLatents {
            let conditioning = Tensor.concatenate([input.latentMask, masked], dimension: 1)
            return try makeLoop(settings, scheduler: scheduler, start: start, generator: generator, firstStep: first,
                                conditioning: conditioning)
        }
        var loop = try makeLoop(settings, scheduler: scheduler, start: start, generator: generator, firstStep: first)
        loop.knownRegion = KnownRegion(imageLatents: input.imageLatents, mask: input.latentMask, noise: noise)
        return loop
    }

    /// An inpainting UNet's extra input when nothing is known (text to image): the mask all ones
    /// and the latents of an all-grey (0) image, what diffusers' inpainting pipeline builds from a
    /// full mask (the masked image is then all zeros) and A1111 gives such models in txt2img.
    public func nothingKnownConditioning(_ settings: PanoramaSettings) throws -> Tensor {
        let grey = try encode(Tensor(zeros: [1, 3, settings.height, settings.width]), settings)
        let ones = Tensor(repeating: 1, shape: [1, 1] + grey.shape.dropFirst(2))
        return Tensor.concatenate([ones, grey], dimension: 1)
    }
}
