import Foundation
import Tensors

/// How `AutoencoderTiny` decodes or encodes a large canvas in tiles.
///
/// The canvas is cut into tiles of at most `tileSize` latent pixels a side (axes no longer than
/// that are not cut). Each tile is computed from its core plus `padding` latent pixels of context
/// on every side (less at the canvas's edges, where the whole pass sees zeros too), cropped back to
/// its core and pasted. TAESD has no normalisation and no attention, so a tile differs from the
/// whole pass only through the zeros its convolutions see at the tile's border, and those reach
/// at most one pixel further per convolution: with the context the whole receptive field needs
/// (`padding` nil, the default: 19 latent pixels for TAESD's layout, both ways) a tile computes the
/// same values as the whole pass, up to float rounding (measured ≤ 2e-6 of the output range; see
/// AutoencoderTinyTests). Between resolution changes each tile is cropped to the context the
/// remaining layers still need, so the full-resolution layers work on the core plus a few pixels
/// (a decode tile of 64 latent pixels: 524x524 pixels of 64-channel maps, ~70 MB each), whatever
/// the canvas size; only the result is canvas-sized.
///
/// `circular` joins the left and right edges (360° panoramas): tiles read context across the
/// seam, so the result equals the whole pass over the canvas extended with wrapped columns,
/// cropped back.
public struct AutoencoderTinyTiling: Sendable, Equatable {
    /// Side of each tile's core, in latent pixels.
    public var tileSize: Int
    /// Context around each tile's core, in latent pixels; nil for the whole receptive field
    /// (`AutoencoderTiny.receptivePadding`), which makes tiles exact up to float rounding. Less
    /// is faster at the cost of seams.
    public var padding: Int?
    /// 360° images: the left and right edges join.
    public var circular: Bool

    public init(tileSize: Int = 64, padding: Int? = nil, circular: Bool = false) {
        precondition(tileSize > 0 && (padding ?? 0) >= 0, "AutoencoderTinyTiling: tileSize \(tileSize), padding \(String(describing: padding))")
        self.tileSize = tileSize
        self.padding = padding
        self.circular = circular
    }
}

extension AutoencoderTiny {
    /// The context, in latent pixels, a tile needs for the decoder and for the encoder to compute
    /// the same values as the whole pass: their receptive fields' reach (19 and 19 for TAESD).
    public var receptivePadding: (decoder: Int, encoder: Int) {
        let decoder = TiledPass.inputMargins(decoderLayers)[0]
        let encoderScale = encoderDownsamplingFactor
        let encoder = encoderLayers.map { (TiledPass.inputMargins($0)[0] + encoderScale - 1) / encoderScale } ?? 0
        return (decoder, encoder)
    }

    /// Image pixels per latent pixel of the encoder: 2^(stages − 1).
    var encoderDownsamplingFactor: Int { 1 << max(0, config.numEncoderBlocks.count - 1) }

    /// `decode(_:)` in tiles (see `AutoencoderTinyTiling`): the same image, with memory bounded
    /// by the tiles, and with `tiling.circular` an image whose left and right edges join.
    public func decode(_ latents: Tensor, tiling: AutoencoderTinyTiling) -> Tensor {
        precondition(latents.rank == 4 && latents.shape[1] == config.latentChannels,
                     "taesd decode: latents \(latents.shape), expected [B, \(config.latentChannels), h, w]")
        let f = downsamplingFactor
        let (b, h, w) = (latents.shape[0], latents.shape[2], latents.shape[3])
        let channels = config.outChannels
        return Tensor(uninitializedShape: [b, channels, h * f, w * f]) { out in
            for i in 0..<b {
                decodeTiles(latents.batch(i), tiling: tiling) { tile, row, column in
                    paste(tile, into: out.baseAddress! + i * channels * h * f * w * f, height: h * f, width: w * f,
                          row: row, column: column)
                }
            }
        }
    }

    /// Decodes the single latent canvas `latents` [1, 4, h, w] tile by tile, handing each decoded
    /// tile [1, 3, th, tw] to `body` with its top-left corner in image pixels, so a caller can
    /// write a canvas too large for memory as it goes.
    public func decodeTiles(_ latents: Tensor, tiling: AutoencoderTinyTiling,
                            _ body: (_ tile: Tensor, _ row: Int, _ column: Int) throws -> Void) rethrows {
        precondition(latents.rank == 4 && latents.shape[0] == 1 && latents.shape[1] == config.latentChannels,
                     "taesd decodeTiles: latents \(latents.shape), expected [1, \(config.latentChannels), h, w]")
        let pass = TiledPass(layers: decoderLayers, inputScale: 1, outputScale: downsamplingFactor,
                             padding: tiling.padding ?? receptivePadding.decoder, circular: tiling.circular)
        try pass.run(latents, tileSize: tiling.tileSize, prepare: decoderInput) { tile, row, column in
            try body(decoderOutput(tile), row, column)
        }
    }

    /// `encode(_:)` in tiles (see `AutoencoderTinyTiling`). The image sides must be multiples of
    /// 8 (the encoder's downsampling factor).
    public func encode(_ images: Tensor, tiling: AutoencoderTinyTiling) throws -> Tensor {
        let layers = try requireEncoder()
        precondition(images.rank == 4 && images.shape[1] == config.inChannels,
                     "taesd encode: images \(images.shape), expected [B, \(config.inChannels), H, W]")
        let f = encoderDownsamplingFactor
        let (b, h, w) = (images.shape[0], images.shape[2], images.shape[3])
        guard h % f == 0, w % f == 0 else {
            throw ModelError.invalidInput("taesd: a tiled encode needs image sides that are multiples of \(f), not \(w)x\(h)")
        }
        let (lh, lw, channels) = (h / f, w / f, config.latentChannels)
        let pass = TiledPass(layers: layers, inputScale: f, outputScale: 1,
                             padding: tiling.padding ?? receptivePadding.encoder, circular: tiling.circular)
        return Tensor(uninitializedShape: [b, channels, lh, lw]) { out in
            for i in 0..<b {
                pass.run(images.batch(i), tileSize: tiling.tileSize, prepare: encoderInput) { tile, row, column in
                    paste(tile, into: out.baseAddress! + i * channels * lh * lw, height: lh, width: lw, row: row, column: column)
                }
            }
        }
    }
}

/// Copies `tile` [1, C, th, tw] into a [C, height, width] plane set at (`row`, `column`).
private func paste(_ tile: Tensor, into base: UnsafeMutablePointer<Float>, height: Int, width: Int, row: Int, column: Int) {
    let (c, th, tw) = (tile.shape[1], tile.shape[2], tile.shape[3])
    tile.withUnsafeBufferPointer { src in
        for ch in 0..<c {
            for y in 0..<th {
                (base + (ch * height + row + y) * width + column)
                    .update(from: src.baseAddress! + (ch * th + y) * tw, count: tw)
            }
        }
    }
}

/// One of TAESD's layer sequences run tile by tile over a canvas.
struct TiledPass {
    let layers: [TinyLayer]
    /// Input and output pixels per latent pixel (decoder 1 and 8, encoder 8 and 1).
    let inputScale: Int, outputScale: Int
    /// Context in latent pixels.
    let padding: Int
    let circular: Bool

    /// The context, in its own pixels, the input of each layer needs for the outputs of the last
    /// one to be exact (the last entry, after all layers, is 0): each 3x3 convolution adds one
    /// pixel (a stride-2 one doubles and adds one), a block three, an upsampling divides.
    static func inputMargins(_ layers: [TinyLayer]) -> [Int] {
        var margins = [Int](repeating: 0, count: layers.count + 1)
        for i in layers.indices.reversed() {
            let m = margins[i + 1]
            switch layers[i] {
            case .conv(let conv): margins[i] = conv.stride * m + conv.weight.shape[2] / 2
            case .activation: margins[i] = m
            case .block(let block): margins[i] = m + 3 * (block.conv0.weight.shape[2] / 2)
            case .upsample(let f): margins[i] = (m + f - 1) / f
            }
        }
        return margins
    }

    /// Splits `length` into parts of at most `size`, as even as possible.
    static func cuts(_ length: Int, size: Int) -> [Range<Int>] {
        let n = max(1, (length + size - 1) / size)
        return (0..<n).map { (length * $0 / n)..<(length * ($0 + 1) / n) }
    }

    /// A map of a tile: its values and where its first row and column lie on the canvas at the
    /// map's resolution (the column may lie outside the canvas when wrapping).
    private struct Region {
        var map: Tensor
        var top: Int, left: Int
        var height: Int { map.shape[2] }
        var width: Int { map.shape[3] }

        /// Keeps rows `rows` and columns `columns` (canvas coordinates) of the map, clipped to it.
        mutating func crop(rows: Range<Int>, columns: Range<Int>) {
            let r0 = max(top, rows.lowerBound), r1 = min(top + height, rows.upperBound)
            let c0 = max(left, columns.lowerBound), c1 = min(left + width, columns.upperBound)
            guard (r0, r1, c0, c1) != (top, top + height, left, left + width) else { return }
            map = map.cropped(rows: (r0 - top)..<(r1 - top), columns: (c0 - left)..<(c1 - left))
            top = r0
            left = c0
        }
    }

    /// Runs every tile of the single canvas `input` [1, C, H, W] (H, W multiples of `inputScale`),
    /// handing each output tile and its corner (output pixels) to `body`. `prepare` is the
    /// pass's pointwise input transform.
    func run(_ input: Tensor, tileSize: Int, prepare: (Tensor) -> Tensor,
             _ body: (Tensor, Int, Int) throws -> Void) rethrows {
        let (height, width) = (input.shape[2] / inputScale, input.shape[3] / inputScale)  // latent pixels
        let margins = Self.inputMargins(layers)
        for rows in Self.cuts(height, size: tileSize) {
            for columns in Self.cuts(width, size: tileSize) {
                var scale = inputScale
                let r0 = max(0, (rows.lowerBound - padding) * scale), r1 = min(height * scale, (rows.upperBound + padding) * scale)
                let c0 = (columns.lowerBound - padding) * scale, c1 = (columns.upperBound + padding) * scale
                let left = circular ? c0 : max(0, c0), right = circular ? c1 : min(width * scale, c1)
                var region = Region(map: prepare(read(input, rows: r0..<r1, columns: left..<right)), top: r0, left: left)
                for (i, layer) in layers.enumerated() {
                    var stride = 1
                    switch layer {
                    case .conv(let conv) where conv.stride > 1: stride = conv.stride
                    case .upsample: break
                    default: if i > 0 { region.map = layer(region.map); continue }
                    }
                    // Where the resolution changes (and at the start), keep only the context the
                    // remaining layers need, whole strides of it so the strided grid stays aligned.
                    let m = (margins[i] + stride - 1) / stride * stride
                    region.crop(rows: (rows.lowerBound * scale - m)..<(rows.upperBound * scale + m),
                                columns: (columns.lowerBound * scale - m)..<(columns.upperBound * scale + m))
                    precondition(region.top % stride == 0 && region.left % stride == 0, "taesd tiles: misaligned stride")
                    region.map = layer(region.map)
                    switch layer {
                    case .upsample(let f):
                        scale *= f
                        region.top *= f
                        region.left *= f
                    case .conv(let conv) where conv.stride > 1:
                        scale /= conv.stride
                        region.top /= conv.stride
                        region.left /= conv.stride
                    default: break
                    }
                }
                precondition(scale == outputScale, "taesd tiles: scale \(scale), expected \(outputScale)")
                region.crop(rows: (rows.lowerBound * scale)..<(rows.upperBound * scale),
                            columns: (columns.lowerBound * scale)..<(columns.upperBound * scale))
                try body(region.map, rows.lowerBound * scale, columns.lowerBound * scale)
            }
        }
    }

    /// Rows `rows` (inside the canvas) and columns `columns` of `x` [1, C, H, W], columns outside
    /// the canvas wrapped around.
    private func read(_ x: Tensor, rows: Range<Int>, columns: Range<Int>) -> Tensor {
        let (c, h, w) = (x.shape[1], x.shape[2], x.shape[3])
        if columns.lowerBound >= 0 && columns.upperBound <= w { return x.cropped(rows: rows, columns: columns) }
        let sources = columns.map { (($0 % w) + w) % w }
        return Tensor(uninitializedShape: [1, c, rows.count, columns.count]) { out in
            x.withUnsafeBufferPointer { src in
                var o = 0
                for ch in 0..<c {
                    for y in rows {
                        let line = src.baseAddress! + (ch * h + y) * w
                        for s in sources {
                            out[o] = line[s]
                            o += 1
                        }
                    }
                }
            }
        }
    }
}
