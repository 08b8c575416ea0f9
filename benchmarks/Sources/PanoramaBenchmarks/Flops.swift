import Foundation
import Weights

/// Floating-point operations counted from layer shapes, by walking a model's config the way the
/// model is built.
///
/// Counting rule (the same as `torch.utils.flop_counter`): 2·M·N·K for every matrix product —
/// convolutions (2 · batch · Hout · Wout · Cout · Cin · kh · kw, 1x1 projections included),
/// linear layers (2 · rows · in · out) and the two attention products QKᵀ and P·V
/// (2 · 2 · batch · Nq · Nk · channels). Biases, normalisation, softmax, activations, residual
/// adds, up-sampling and the guidance mix are not counted (they are < 1 % of the work).
struct FlopCount {
    var conv = 0.0, linear = 0.0, attention = 0.0
    /// Every counted operation (and every normalisation, which counts 0), in execution order,
    /// for `unet-layers` to replay.
    var ops: [Op] = []
    var total: Double { conv + linear + attention }
    var gflop: Double { total / 1e9 }
    var breakdown: [String: Double] { ["conv": conv / 1e9, "linear": linear / 1e9, "attention": attention / 1e9] }

    /// One layer as the benchmark sees it: enough to rebuild its inputs and call the kernel.
    enum Op {
        /// Output size `height` x `width`; the input is `stride` times larger, padded by k/2.
        case conv(batch: Int, cin: Int, cout: Int, kernel: Int, stride: Int, height: Int, width: Int)
        case linear(rows: Int, in: Int, out: Int)
        case attention(batch: Int, queries: Int, keys: Int, channels: Int, heads: Int)
        case groupNorm(batch: Int, channels: Int, height: Int, width: Int)
        case layerNorm(rows: Int, channels: Int)
    }

    mutating func conv(batch: Int, cin: Int, cout: Int, kernel: Int, height: Int, width: Int, stride: Int = 1) {
        conv += 2 * Double(batch * height * width) * Double(cout * cin * kernel * kernel)
        ops.append(.conv(batch: batch, cin: cin, cout: cout, kernel: kernel, stride: stride, height: height, width: width))
    }

    mutating func linear(rows: Int, in i: Int, out o: Int) {
        linear += 2 * Double(rows) * Double(i) * Double(o)
        ops.append(.linear(rows: rows, in: i, out: o))
    }

    /// QKᵀ and P·V for `queries` × `keys` positions over `channels` (all heads together).
    mutating func attention(batch: Int, queries: Int, keys: Int, channels: Int, heads: Int = 1) {
        attention += 2 * 2 * Double(batch) * Double(queries) * Double(keys) * Double(channels)
        ops.append(.attention(batch: batch, queries: queries, keys: keys, channels: channels, heads: heads))
    }

    mutating func groupNorm(batch: Int, channels: Int, height: Int, width: Int) {
        ops.append(.groupNorm(batch: batch, channels: channels, height: height, width: width))
    }

    mutating func layerNorm(rows: Int, channels: Int) {
        ops.append(.layerNorm(rows: rows, channels: channels))
    }

    static func * (a: FlopCount, k: Double) -> FlopCount {
        FlopCount(conv: a.conv * k, linear: a.linear * k, attention: a.attention * k)
    }
}

/// One UNet2DConditionModel call on [batch, in, height, width] latents with `tokens` context tokens.
/// The time embedding MLP is counted once per batch element, as diffusers computes it.
func unetFlops(_ c: UNetConfig, batch: Int, height: Int, width: Int, tokens: Int) -> FlopCount {
    var f = FlopCount()
    let ch = c.blockOutChannels, levels = ch.count
    let timeChannels = ch[0] * 4
    let contextDim = c.crossAttentionDimPerBlock[0]
    let layers = c.layersPerDownBlock, transformerLayers = c.transformerLayersPerDownBlock
    let heads = c.headsPerBlock
    f.linear(rows: batch, in: ch[0], out: timeChannels)
    f.linear(rows: batch, in: timeChannels, out: timeChannels)

    func resnet(_ cin: Int, _ cout: Int, _ h: Int, _ w: Int) {
        f.groupNorm(batch: batch, channels: cin, height: h, width: w)
        f.conv(batch: batch, cin: cin, cout: cout, kernel: 3, height: h, width: w)
        f.linear(rows: batch, in: timeChannels, out: cout)
        f.groupNorm(batch: batch, channels: cout, height: h, width: w)
        f.conv(batch: batch, cin: cout, cout: cout, kernel: 3, height: h, width: w)
        if cin != cout { f.conv(batch: batch, cin: cin, cout: cout, kernel: 1, height: h, width: w) }
    }
    func transformer(_ channels: Int, _ heads: Int, _ depth: Int, _ h: Int, _ w: Int) {
        let n = h * w, rows = batch * n
        func projection() {
            if c.useLinearProjection { f.linear(rows: rows, in: channels, out: channels) }
            else { f.conv(batch: batch, cin: channels, cout: channels, kernel: 1, height: h, width: w) }
        }
        f.groupNorm(batch: batch, channels: channels, height: h, width: w)
        projection()
        for _ in 0..<depth {
            f.layerNorm(rows: rows, channels: channels)
            for _ in 0..<3 { f.linear(rows: rows, in: channels, out: channels) }  // self-attention q, k, v
            f.attention(batch: batch, queries: n, keys: n, channels: channels, heads: heads)
            f.linear(rows: rows, in: channels, out: channels)                      // its output projection
            f.layerNorm(rows: rows, channels: channels)
            f.linear(rows: rows, in: channels, out: channels)                      // cross-attention q
            for _ in 0..<2 { f.linear(rows: batch * tokens, in: contextDim, out: channels) }  // k, v
            f.attention(batch: batch, queries: n, keys: tokens, channels: channels, heads: heads)
            f.linear(rows: rows, in: channels, out: channels)                      // its output projection
            f.layerNorm(rows: rows, channels: channels)
            f.linear(rows: rows, in: channels, out: 8 * channels)                  // GEGLU (2 x 4C)
            f.linear(rows: rows, in: 4 * channels, out: channels)
        }
        projection()
    }

    var (h, w) = (height, width)
    f.conv(batch: batch, cin: c.inChannels, cout: ch[0], kernel: c.convInKernel, height: h, width: w)
    var sizes: [(Int, Int)] = [(h, w)]  // spatial size of every skip connection
    var output = ch[0]
    for (i, type) in c.downBlockTypes.enumerated() {
        let input = output
        output = ch[i]
        for j in 0..<layers[i] {
            resnet(j == 0 ? input : output, output, h, w)
            if type == "CrossAttnDownBlock2D" { transformer(output, heads[i], transformerLayers[i], h, w) }
            sizes.append((h, w))
        }
        if i < levels - 1 {
            (h, w) = ((h + 2 * c.downsamplePadding - 3) / 2 + 1, (w + 2 * c.downsamplePadding - 3) / 2 + 1)
            f.conv(batch: batch, cin: output, cout: output, kernel: 3, height: h, width: w, stride: 2)
            sizes.append((h, w))
        }
    }
    let top = ch[levels - 1]
    resnet(top, top, h, w)
    transformer(top, heads[levels - 1], transformerLayers[levels - 1], h, w)
    resnet(top, top, h, w)

    let rch = Array(ch.reversed()), rlayers = Array(layers.reversed())
    let rtransformer = Array(transformerLayers.reversed()), rheads = Array(heads.reversed())
    output = rch[0]
    var skipChannels = [ch[0]]
    for i in 0..<levels {
        for _ in 0..<layers[i] { skipChannels.append(ch[i]) }
        if i < levels - 1 { skipChannels.append(ch[i]) }
    }
    for (i, type) in c.upBlockTypes.enumerated() {
        let previous = output
        output = rch[i]
        for j in 0...rlayers[i] {
            let skip = skipChannels.removeLast()
            sizes.removeLast()
            resnet((j == 0 ? previous : output) + skip, output, h, w)
            if type == "CrossAttnUpBlock2D" { transformer(output, rheads[i], rtransformer[i], h, w) }
        }
        if i < levels - 1 {
            (h, w) = sizes.last!
            f.conv(batch: batch, cin: output, cout: output, kernel: 3, height: h, width: w)
        }
    }
    f.groupNorm(batch: batch, channels: ch[0], height: h, width: w)
    f.conv(batch: batch, cin: ch[0], cout: c.outChannels, kernel: c.convOutKernel, height: h, width: w)
    return f
}

/// One AutoencoderKL decode of [batch, latent, height, width] latents (post-quant conv included).
func vaeDecodeFlops(_ c: AutoencoderKLConfig, batch: Int, height: Int, width: Int) -> FlopCount {
    var f = FlopCount()
    var (h, w) = (height, width)
    let rch = Array(c.blockOutChannels.reversed())
    func resnet(_ cin: Int, _ cout: Int) {
        f.groupNorm(batch: batch, channels: cin, height: h, width: w)
        f.conv(batch: batch, cin: cin, cout: cout, kernel: 3, height: h, width: w)
        f.groupNorm(batch: batch, channels: cout, height: h, width: w)
        f.conv(batch: batch, cin: cout, cout: cout, kernel: 3, height: h, width: w)
        if cin != cout { f.conv(batch: batch, cin: cin, cout: cout, kernel: 1, height: h, width: w) }
    }
    if c.usePostQuantConv {
        f.conv(batch: batch, cin: c.latentChannels, cout: c.latentChannels, kernel: 1, height: h, width: w)
    }
    f.conv(batch: batch, cin: c.latentChannels, cout: rch[0], kernel: 3, height: h, width: w)
    resnet(rch[0], rch[0])
    if c.midBlockAddAttention {
        f.groupNorm(batch: batch, channels: rch[0], height: h, width: w)
        for _ in 0..<4 { f.linear(rows: batch * h * w, in: rch[0], out: rch[0]) }  // q, k, v, out
        f.attention(batch: batch, queries: h * w, keys: h * w, channels: rch[0])
    }
    resnet(rch[0], rch[0])
    var output = rch[0]
    for i in 0..<rch.count {
        let previous = output
        output = rch[i]
        for j in 0...c.layersPerBlock { resnet(j == 0 ? previous : output, output) }
        if i < rch.count - 1 {
            (h, w) = (2 * h, 2 * w)
            f.conv(batch: batch, cin: output, cout: output, kernel: 3, height: h, width: w)
        }
    }
    f.groupNorm(batch: batch, channels: rch.last!, height: h, width: w)
    f.conv(batch: batch, cin: rch.last!, cout: c.outChannels, kernel: 3, height: h, width: w)
    return f
}

/// One CLIPTextModel forward pass over [batch, tokens] ids (all layers).
func textEncoderFlops(_ c: CLIPTextConfig, batch: Int, tokens: Int) -> FlopCount {
    var f = FlopCount()
    let rows = batch * tokens, d = c.hiddenSize
    for _ in 0..<c.numHiddenLayers {
        f.linear(rows: rows, in: d, out: 4 * d)  // q, k, v, out
        f.attention(batch: batch, queries: tokens, keys: tokens, channels: d)
        f.linear(rows: rows, in: d, out: c.intermediateSize)
        f.linear(rows: rows, in: c.intermediateSize, out: d)
    }
    return f
}

/// The counted GFLOP of every row, from the configs alone (`panorama-benchmarks flops`).
func flopReport(layout: URL) -> String {
    do {
        let unet = try UNetConfig.load(from: layout.appendingPathComponent("unet/config.json"))
        let vae = try AutoencoderKLConfig.load(from: layout.appendingPathComponent("vae/config.json"))
        let text = try CLIPTextConfig.load(from: layout.appendingPathComponent("text_encoder/config.json"))
        let rows: [(String, FlopCount)] = [
            ("unet (batch 2, 64x64, 77 tokens)", unetFlops(unet, batch: 2, height: 64, width: 64, tokens: 77)),
            ("vae-decode-512", vaeDecodeFlops(vae, batch: 1, height: 64, width: 64)),
            ("vae-decode-4096", vaeDecodeFlops(vae, batch: 1, height: 64, width: 512)),
            ("text-encoder (2 x 77)", textEncoderFlops(text, batch: 2, tokens: 77)),
        ]
        return rows.map { name, f in
            String(format: "%@: %.3f GFLOP (conv %.3f, linear %.3f, attention %.3f)",
                   name, f.gflop, f.conv / 1e9, f.linear / 1e9, f.attention / 1e9)
        }.joined(separator: "\n")
    } catch {
        return "flops: \(error)"
    }
}
