import Foundation
import Models
import Synchronization
import Tensors
import Weights

/// A cheap picture of latents while a render runs: per latent pixel, RGB = M · z + b (a 3xC
/// matrix and a bias, A1111's "Approx cheap" preview and ComfyUI's latent2RGB), **fitted to the
/// model's own VAE** by `fit(_:)` (the bundled model has its own latent space, where SD's published
/// factors are wrong), or the tiny autoencoder's real decode when the pipeline decodes with TAESD.
///
/// `image(_:upscale:)` works on any latents of the UNet's space, e.g. `StepReport.latents`; a
/// linear preview of a 4096x512 canvas (512x64 latents) takes 0.2 ms, about 25 ms enlarged x8 bilinear
/// (2 busy cores). On renders of the bundled model the fitted map is off from the real decode (8x
/// downsampled) by 12.3 levels of 255 on average (SD 1.5's published factors: 73).
///
/// The result is raw RGB bytes (`PreviewImage`), not Imaging's `RGBImage`: Renderer does not
/// depend on Imaging (which sits beside it on Tensors), and the bytes have `RGBImage`'s layout, so a
/// caller that writes PNGs bridges with `RGBImage(width:height:pixels:)` without a copy.
public struct LatentPreview: Sendable {
    /// How the preview is computed.
    public enum Method: Sendable {
        /// RGB in [-1, 1] = `matrix` (3 rows of C, row-major) · latent + `bias`, per latent pixel.
        case linear(matrix: [Float], bias: [Float])
        /// The tiny autoencoder's decode (8x the latent size; slower, the real picture).
        case tiny(AutoencoderTiny)
    }

    /// How the latent-size picture is enlarged for display.
    public enum Upscale: Sendable, Equatable {
        /// The latent size (one pixel per latent pixel).
        case none
        /// `factor` x larger, each latent pixel a block.
        case nearest(factor: Int = 8)
        /// `factor` x larger, bilinear between latent pixel centres (as `F.interpolate` without
        /// `align_corners`); wraps around the left and right edges with `circular`.
        case bilinear(factor: Int = 8)
    }

    public let method: Method
    /// Latent channels the preview reads (4 for SD).
    public let channels: Int

    /// A linear preview: `matrix` 3 rows of `channels` (row-major), `bias` 3, in [-1, 1] RGB units
    /// for latents in the UNet's (scaled) space.
    public init(matrix: [Float], bias: [Float]) {
        precondition(matrix.count % 3 == 0 && matrix.count > 0 && bias.count == 3, "LatentPreview: 3xC matrix and 3 biases")
        method = .linear(matrix: matrix, bias: bias)
        channels = matrix.count / 3
    }

    /// The tiny autoencoder's decode as the preview (what the final picture will be when the
    /// pipeline decodes with it).
    public static func taesd(_ autoencoder: AutoencoderTiny) -> LatentPreview {
        LatentPreview(method: .tiny(autoencoder), channels: autoencoder.config.latentChannels)
    }

    private init(method: Method, channels: Int) {
        self.method = method
        self.channels = channels
    }

    /// The preview for `pipeline`: TAESD's decode when it decodes with a tiny autoencoder, else the
    /// linear map fitted to its VAE (kept: `fitted(_:store:)`).
    public init(for pipeline: PanoramaPipeline) {
        if let tiny = pipeline.autoencoder as? AutoencoderTiny {
            self = .taesd(tiny)
        } else {
            self = .fitted(pipeline.autoencoder as? AutoencoderKL ?? pipeline.model.vae)
        }
    }

    // MARK: - Fitting

    /// Fits to `model`'s VAE (`fit(_:samples:size:grid:spread:seed:)`).
    public static func fit(_ model: StableDiffusionModel) -> LatentPreview {
        fit(model.vae)
    }

    /// Fits the linear map to `vae`'s decoder: `samples` latents of `size`x`size` latent pixels are
    /// drawn in code (seeded: per channel, Gaussian values of standard deviation `spread` on a
    /// `grid`x`grid` lattice, bilinear between them, so smooth as real latents are), decoded,
    /// and the map from each latent pixel to its 8x8 block of the decode (area average) is solved by
    /// least squares (normal equations in Double), leaving out the ring of latent pixels at the
    /// border. It fits what the preview stands in for, the decoder, on latents spread over the whole
    /// latent space; it needs no file at run time and no encoder.
    ///
    /// Against the real decode of renders of the bundled model (8x downsampled), this fit is off by
    /// 12.3 levels of 255 on average, where the best linear map fitted on those very renders is off
    /// by 9.8 (both measured by `LatentPreviewTests`) and a fit on the VAE's encodings of smooth colour
    /// pictures (this type's first version, which needs the encoder) by 33–54. The
    /// defaults (16 samples of 8x8, lattice 2x2, spread 1.3: about the spread of rendered latents) were
    /// the best of those measured at their cost.
    ///
    /// Cost: one decode of `samples`·(8·`size`)² pixels (0.066 megapixels by default, a quarter of
    /// a 512x512 decode): 0.5 s with the bundled model's VAE on 2 busy cores; SD 1.5's VAE decodes
    /// 512x512 in 3.8 s on two Zen 5 cores (`benchmarks/README.md`), so about 1 s (an estimate:
    /// no SD 1.5 weights here), once per VAE (`fitted(_:store:)` keeps it for later runs); fewer `samples`
    /// trade a little accuracy for time (6 of 8x8: 14.1 levels instead of 12.3).
    public static func fit(_ vae: AutoencoderKL, samples: Int = 16, size: Int = 8, grid: Int = 2,
                           spread: Float = 1.3, seed: UInt64 = 0x5EED) -> LatentPreview {
        precondition(samples >= 1 && size >= 4 && grid >= 1, "LatentPreview.fit: at least 1 sample of 4x4 latents")
        let latents = smoothLatents(samples, channels: vae.config.latentChannels, size: size, grid: grid,
                                    spread: spread, seed: seed)
        return fit(latents: latents, images: vae.decode(latents / vae.scalingFactor))
    }

    /// `count` smooth random latents [count, channels, size, size]: per channel, standard normal
    /// values times `spread` on a `grid`x`grid` lattice (one value with `grid` 1), bilinear between.
    public static func smoothLatents(_ count: Int, channels: Int, size: Int, grid: Int, spread: Float,
                                     seed: UInt64) -> Tensor {
        var rng = SplitMix64(seed)
        func normal() -> Float {
            let u1 = (Float(rng.next() >> 40) + 0.5) / Float(1 << 24), u2 = Float(rng.next() >> 40) / Float(1 << 24)
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
        let plane = size * size
        var data = [Float](repeating: 0, count: count * channels * plane)
        for m in 0..<(count * channels) {
            let lattice = (0..<(grid * grid)).map { _ in normal() * spread }
            for i in 0..<size {
                for j in 0..<size {
                    guard grid > 1 else { data[m * plane + i * size + j] = lattice[0]; continue }
                    let (fy, fx) = (Float(i) / Float(size - 1) * Float(grid - 1), Float(j) / Float(size - 1) * Float(grid - 1))
                    let (r0, c0) = (min(grid - 2, Int(fy)), min(grid - 2, Int(fx)))
                    let (ty, tx) = (fy - Float(r0), fx - Float(c0))
                    func at(_ r: Int, _ c: Int) -> Float { lattice[r * grid + c] }
                    data[m * plane + i * size + j] = (1 - ty) * ((1 - tx) * at(r0, c0) + tx * at(r0, c0 + 1))
                        + ty * ((1 - tx) * at(r0 + 1, c0) + tx * at(r0 + 1, c0 + 1))
                }
            }
        }
        return Tensor(shape: [count, channels, size, size], data: data)
    }

    /// The least-squares map from `latents` [B, C, h, w] to `images` [B, 3, f·h, f·w] in [-1, 1]
    /// (each latent pixel's f x f block, area averaged), leaving out `border` latent pixels at each
    /// edge; solved by the normal equations ((C+1) x (C+1)) in Double.
    public static func fit(latents: Tensor, images batch: Tensor, border: Int = 1) -> LatentPreview {
        let c = latents.shape[1], lh = latents.shape[2], lw = latents.shape[3]
        let pictures = latents.shape[0], factor = batch.shape[2] / lh
        let (height, width) = (batch.shape[2], batch.shape[3])
        let n = c + 1
        var a = [Double](repeating: 0, count: n * n)
        var b = [Double](repeating: 0, count: n * 3)
        var x = [Double](repeating: 1, count: n)
        let border = min(border, (min(lh, lw) - 1) / 2)
        latents.withUnsafeBufferPointer { z in
            batch.withUnsafeBufferPointer { img in
                for p in 0..<pictures {
                    for i in border..<(lh - border) {
                        for j in border..<(lw - border) {
                            for k in 0..<c { x[k] = Double(z[((p * c + k) * lh + i) * lw + j]) }
                            for r in 0..<n { for s in 0..<n { a[r * n + s] += x[r] * x[s] } }
                            for ch in 0..<3 {
                                var sum = 0.0
                                for u in 0..<factor {
                                    let row = ((p * 3 + ch) * height + i * factor + u) * width + j * factor
                                    for v in 0..<factor { sum += Double(img[row + v]) }
                                }
                                let y = sum / Double(factor * factor)
                                for r in 0..<n { b[r * 3 + ch] += x[r] * y }
                            }
                        }
                    }
                }
            }
        }
        // a whisper of ridge on the latent weights keeps a degenerate VAE (a constant channel) solvable
        let ridge = 1e-9 * (0..<c).map { a[$0 * n + $0] }.reduce(0, +) + 1e-12
        for k in 0..<c { a[k * n + k] += ridge }
        let w = solve(a, b, n: n, columns: 3)
        var matrix = [Float](repeating: 0, count: 3 * c), bias = [Float](repeating: 0, count: 3)
        for ch in 0..<3 {
            for k in 0..<c { matrix[ch * c + k] = Float(w[k * 3 + ch]) }
            bias[ch] = Float(w[c * 3 + ch])
        }
        return LatentPreview(matrix: matrix, bias: bias)
    }

    private static let cache = Mutex<[[Float]: LatentPreview]>([:])

    /// Where fits are kept between runs: `$XDG_CACHE_HOME/panorama/latent-previews.json` (or
    /// `~/.cache/…`), beside the hash cache.
    public static let defaultStore = UserCache.folder.appendingPathComponent("latent-previews.json")

    /// `fit(vae)`, computed once per VAE and kept: in this process, and in `store` (nil: not on
    /// disk) for later runs. The key is the VAE's decode of fixed 2x2 latents (milliseconds even
    /// for SD 1.5's VAE), so a model with a replaced VAE gets its own fit and the same weights
    /// share one wherever they are loaded from.
    public static func fitted(_ vae: AutoencoderKL, store: URL? = defaultStore) -> LatentPreview {
        let key = fitKey(vae)
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let preview = store.flatMap { stored(key: key, channels: vae.config.latentChannels, in: $0) } ?? {
            let preview = fit(vae)
            if let store { keep(preview, key: key, in: store) }
            return preview
        }()
        cache.withLock { $0[key] = preview }
        return preview
    }

    /// The fit kept in `store` for `vae`, if any (read with the checks an untrusted file needs).
    public static func stored(for vae: AutoencoderKL, in store: URL) -> LatentPreview? {
        stored(key: fitKey(vae), channels: vae.config.latentChannels, in: store)
    }

    private static func fitKey(_ vae: AutoencoderKL) -> [Float] {
        let probe = smoothLatents(1, channels: vae.config.latentChannels, size: 2, grid: 2, spread: 1, seed: 0xF1D0)
        return vae.decode(probe).withUnsafeBufferPointer(Array.init) + [vae.scalingFactor]
    }

    /// The store's name for a key: FNV-1a (64 bits) of its floats' bits, in hex. A collision would
    /// only give a wrong preview, never a wrong picture.
    private static func storeName(_ key: [Float]) -> String {
        var hash = FNV1a()
        for value in key {
            for byte in withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) { hash.add(UInt64(byte)) }
        }
        return hash.hex
    }

    private struct StoredFit: Codable {
        var matrix: [Float]
        var bias: [Float]
    }

    private static func storedFits(_ store: URL) -> [String: StoredFit] {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: store.path),
              let size = attributes[.size] as? Int, size < 4 << 20, let data = try? Data(contentsOf: store) else { return [:] }
        return (try? JSONDecoder().decode([String: StoredFit].self, from: data)) ?? [:]
    }

    private static func stored(key: [Float], channels: Int, in store: URL) -> LatentPreview? {
        guard let fit = storedFits(store)[storeName(key)], fit.matrix.count == 3 * channels, fit.bias.count == 3,
              (fit.matrix + fit.bias).allSatisfy({ $0.isFinite && abs($0) < 1e6 }) else { return nil }
        return LatentPreview(matrix: fit.matrix, bias: fit.bias)
    }

    /// Adds a fit to `store` (`UserCache.write`: failures only cost the next run a fit).
    private static func keep(_ preview: LatentPreview, key: [Float], in store: URL) {
        guard case let .linear(matrix, bias) = preview.method else { return }
        var fits = storedFits(store)
        fits[storeName(key)] = StoredFit(matrix: matrix, bias: bias)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(fits) else { return }
        UserCache.write(data, to: store)
    }

    /// Solves `a` (n x n, symmetric positive definite) · w = `b` (n x columns) by Gaussian
    /// elimination with partial pivoting; returns w (n x columns, row-major).
    static func solve(_ a: [Double], _ b: [Double], n: Int, columns: Int) -> [Double] {
        var a = a, b = b
        for k in 0..<n {
            let pivot = (k..<n).max { abs(a[$0 * n + k]) < abs(a[$1 * n + k]) }!
            if pivot != k {
                for j in 0..<n { a.swapAt(k * n + j, pivot * n + j) }
                for j in 0..<columns { b.swapAt(k * columns + j, pivot * columns + j) }
            }
            let d = a[k * n + k]
            guard d != 0 else { continue }
            for r in (k + 1)..<n {
                let f = a[r * n + k] / d
                guard f != 0 else { continue }
                for j in k..<n { a[r * n + j] -= f * a[k * n + j] }
                for j in 0..<columns { b[r * columns + j] -= f * b[k * columns + j] }
            }
        }
        var w = [Double](repeating: 0, count: n * columns)
        for k in stride(from: n - 1, through: 0, by: -1) {
            for j in 0..<columns {
                var s = b[k * columns + j]
                for m in (k + 1)..<n { s -= a[k * n + m] * w[m * columns + j] }
                w[k * columns + j] = a[k * n + k] == 0 ? 0 : s / a[k * n + k]
            }
        }
        return w
    }

    // MARK: - Previews

    /// The preview of `latents` [B, C, h, w] in the UNet's space (the first of the batch): the
    /// latent size (h x w) enlarged as `upscale` says. A TAESD preview decodes at 8x and is area
    /// averaged back for `.none`; enlarged previews are its decode as is (`factor` ignored).
    /// `circular`: the picture's left and right edges join (360° panoramas).
    public func image(_ latents: Tensor, upscale: Upscale = .none, circular: Bool = false) -> PreviewImage {
        precondition(latents.rank == 4 && latents.shape[1] == channels,
                     "LatentPreview: latents \(latents.shape), expected [B, \(channels), h, w]")
        let (h, w) = (latents.shape[2], latents.shape[3])
        let first = latents.shape[0] == 1 ? latents : latents.batch(0)
        switch method {
        case let .linear(matrix, bias):
            let small = linear(first, matrix: matrix, bias: bias, height: h, width: w)
            switch upscale {
            case .none: return small
            case .nearest(let factor): return small.nearest(factor)
            case .bilinear(let factor): return small.bilinear(factor, circular: circular)
            }
        case .tiny(let tiny):
            let decoded = (try? tiny.decode(first, circular: circular, method: .tiled(VAETiling()))) ?? tiny.decode(first)
            let full = PreviewImage(decoded: decoded)
            return upscale == .none ? full.areaAverage(full.width / w) : full
        }
    }

    private func linear(_ z: Tensor, matrix: [Float], bias: [Float], height h: Int, width w: Int) -> PreviewImage {
        let plane = h * w, c = channels
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        z.withUnsafeBufferPointer { p in
            pixels.withUnsafeMutableBufferPointer { out in
                for ch in 0..<3 {
                    let b = bias[ch]
                    for i in 0..<plane {
                        var v = b
                        for k in 0..<c { v += matrix[ch * c + k] * p[k * plane + i] }
                        out[i * 3 + ch] = pixelByte(v)
                    }
                }
            }
        }
        return PreviewImage(width: w, height: h, pixels: pixels)
    }
}

/// An 8-bit RGB picture, rows top to bottom, pixels interleaved: Imaging's `RGBImage` layout.
public struct PreviewImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "PreviewImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A decoder's output [1, 3, H, W] in [-1, 1], as the pipelines convert it (`RGBImage(decoded:)`).
    public init(decoded image: Tensor) {
        let pixels = image.interleavedRGBBytes()  // checks the shape first
        self.init(width: image.shape[3], height: image.shape[2], pixels: pixels)
    }

    /// `factor` x larger, each pixel a block.
    public func nearest(_ factor: Int) -> PreviewImage {
        let (W, H) = (width * factor, height * factor)
        var out = [UInt8](repeating: 0, count: W * H * 3)
        pixels.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                for y in 0..<height {
                    let row = y * factor * W * 3
                    for x in 0..<width {
                        for f in 0..<factor {
                            let d = row + (x * factor + f) * 3
                            o[d] = p[(y * width + x) * 3]; o[d + 1] = p[(y * width + x) * 3 + 1]; o[d + 2] = p[(y * width + x) * 3 + 2]
                        }
                    }
                    for f in 1..<max(1, factor) {
                        for k in 0..<(W * 3) { o[row + f * W * 3 + k] = o[row + k] }
                    }
                }
            }
        }
        return PreviewImage(width: W, height: H, pixels: out)
    }

    /// `factor` x larger, bilinear between pixel centres (half-pixel sampling, edges clamped; the
    /// left and right edges wrap around with `circular`).
    public func bilinear(_ factor: Int, circular: Bool = false) -> PreviewImage {
        let (W, H) = (width * factor, height * factor)
        func taps(_ n: Int, _ size: Int, wrap: Bool) -> [(Int, Int, Float)] {
            (0..<(n * factor)).map { o in
                let s = (Float(o) + 0.5) / Float(factor) - 0.5
                var i0 = Int(s.rounded(.down)), t = s - Float(i0)
                var i1 = i0 + 1
                if wrap {
                    i0 = (i0 % size + size) % size; i1 = i1 % size
                } else {
                    if i0 < 0 { i0 = 0; t = 0 }
                    if i1 >= size { i1 = size - 1 }
                }
                return (i0, i1, t)
            }
        }
        let xs = taps(width, width, wrap: circular), ys = taps(height, height, wrap: false)
        var out = [UInt8](repeating: 0, count: W * H * 3)
        pixels.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                for (Y, (y0, y1, ty)) in ys.enumerated() {
                    for (X, (x0, x1, tx)) in xs.enumerated() {
                        let (a, b, c, d) = ((y0 * width + x0) * 3, (y0 * width + x1) * 3, (y1 * width + x0) * 3, (y1 * width + x1) * 3)
                        let dst = (Y * W + X) * 3
                        for k in 0..<3 {
                            let top = Float(p[a + k]) + tx * (Float(p[b + k]) - Float(p[a + k]))
                            let bottom = Float(p[c + k]) + tx * (Float(p[d + k]) - Float(p[c + k]))
                            o[dst + k] = UInt8((top + ty * (bottom - top)).rounded())
                        }
                    }
                }
            }
        }
        return PreviewImage(width: W, height: H, pixels: out)
    }

    /// `factor` x smaller, each pixel the mean of its block (sizes must divide).
    public func areaAverage(_ factor: Int) -> PreviewImage {
        guard factor > 1 else { return self }
        let (w, h) = (width / factor, height / factor)
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                for k in 0..<3 {
                    var sum = 0
                    for u in 0..<factor { for v in 0..<factor { sum += Int(pixels[((y * factor + u) * width + x * factor + v) * 3 + k]) } }
                    out[(y * w + x) * 3 + k] = UInt8((Double(sum) / Double(factor * factor)).rounded())
                }
            }
        }
        return PreviewImage(width: w, height: h, pixels: out)
    }
}
