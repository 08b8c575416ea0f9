import Models
import Tensors

/// What turns the latents the UNet denoises into pictures, and pictures into such latents: the
/// model's own VAE (`AutoencoderKL`) or a tiny one that trades detail for speed (`AutoencoderTiny`,
/// TAESD). Latents here are the UNet's, already multiplied by the VAE's scaling factor.
public protocol Autoencoder: Sendable {
    /// An image [1, 3, H, W] in [-1, 1] from latents [1, C, H/8, W/8]. `circular`: the image's left
    /// and right edges join (360° panoramas).
    func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod) throws -> Tensor
    /// Latents of an image [1, 3, H, W] in [-1, 1] (the KL VAE: its distribution's mean).
    func encode(_ image: Tensor, circular: Bool, method: DecodeMethod) throws -> Tensor
    /// `decode(_:circular:method:)`, resumable through `journal` where the pass is long enough
    /// to need it (the KL VAE's tiled pass; others ignore the journal).
    func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod, journal: TiledPassJournal?) throws -> Tensor
    /// `encode(_:circular:method:)`, resumable through `journal` as `decode(_:circular:method:journal:)`.
    func encode(_ image: Tensor, circular: Bool, method: DecodeMethod, journal: TiledPassJournal?) throws -> Tensor
}

extension Autoencoder {
    public func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod, journal: TiledPassJournal?) throws -> Tensor {
        try decode(latents, circular: circular, method: method)
    }

    public func encode(_ image: Tensor, circular: Bool, method: DecodeMethod, journal: TiledPassJournal?) throws -> Tensor {
        try encode(image, circular: circular, method: method)
    }
}

extension AutoencoderKL: Autoencoder {
    /// `.tiled` decodes in tiles with whole-image GroupNorm statistics: the same image as a
    /// whole-image decode with bounded memory (small pictures, `VAETiling.wholeImagePixels`, in
    /// one pass), and in 360° mode a decoder that wraps around the
    /// edges, so the edges join exactly. `.whole` is diffusers' decode: one pass over the canvas,
    /// and in 360° mode 8 latent columns from the opposite edge padded on each side and cropped after.
    public func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod) throws -> Tensor {
        try decode(latents, circular: circular, method: method, journal: nil)
    }

    /// As `decode(_:circular:method:)`; a tiled pass records its progress in `journal` and
    /// continues the pass the journal holds (see `TiledPassJournal`).
    public func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod, journal: TiledPassJournal?) throws -> Tensor {
        let scaled = latents / scalingFactor
        switch method {
        case .tiled(var tiling):
            let pixels = scaled.shape[2] * scaled.shape[3] * 64
            if !circular && pixels <= tiling.wholeImagePixels { return decode(scaled) }
            tiling.circular = circular
            return try decode(scaled, tiling: tiling, journal: journal)
        case .whole:
            guard circular else { return decode(scaled) }
            let w = scaled.shape[3], pad = min(PanoramaPipeline.circularDecodePadding, w)
            let rows = 0..<scaled.shape[2]
            let padded = Tensor.concatenate([scaled.cropped(rows: rows, columns: (w - pad)..<w), scaled,
                                             scaled.cropped(rows: rows, columns: 0..<pad)], dimension: 3)
            let image = decode(padded)
            let crop = pad * (image.shape[3] / padded.shape[3])
            return image.cropped(rows: 0..<image.shape[2], columns: crop..<(image.shape[3] - crop))
        }
    }

    /// The mean of the tiled encode's latent distribution, scaled; tiles as `method`'s tiling when
    /// it decodes in tiles (so with the same temporary-file format), else `VAETiling()`.
    public func encode(_ image: Tensor, circular: Bool, method: DecodeMethod) throws -> Tensor {
        try encode(image, circular: circular, method: method, journal: nil)
    }

    /// As `encode(_:circular:method:)`, resumable through `journal`.
    public func encode(_ image: Tensor, circular: Bool, method: DecodeMethod, journal: TiledPassJournal?) throws -> Tensor {
        var tiling = VAETiling()
        if case .tiled(let t) = method { tiling = t }
        tiling.circular = circular
        return try encode(image, tiling: tiling, journal: journal).mean * scalingFactor
    }
}

extension AutoencoderTiny: Autoencoder {
    /// TAESD's decode. `.tiled` (the default) decodes 64-latent tiles with the decoder's whole
    /// receptive field as context, equal to the whole decode to float rounding; in 360° mode
    /// (either method) the tiles wrap around the left and right edges.
    public func decode(_ latents: Tensor, circular: Bool, method: DecodeMethod) throws -> Tensor {
        if case .whole = method, !circular { return decode(latents) }
        return decode(latents, tiling: AutoencoderTinyTiling(circular: circular))
    }

    /// TAESD's encode in tiles (wrapping in 360° mode); throws when only the decoder was loaded.
    public func encode(_ image: Tensor, circular: Bool, method: DecodeMethod) throws -> Tensor {
        try encode(image, tiling: AutoencoderTinyTiling(circular: circular))
    }
}
