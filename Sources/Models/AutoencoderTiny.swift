import Foundation
import Tensors
import Weights

/// TAESD, madebyollin's tiny distilled autoencoder for Stable Diffusion's latent space, as
/// diffusers' `AutoencoderTiny`: plain 3x3 convolutions and ReLU residual blocks, no
/// normalisation and no attention, so it is fast (a 512x512 decode takes about one CPU-second on
/// the development machine) and its tiles need no shared statistics (see `AutoencoderTinyTiling`).
///
/// Latents are the ones the UNet denoises: TAESD's `scaling_factor` is 1.0 and its latent space is
/// SD's *scaled* one, so `decode` takes exactly what diffusers' pipelines pass (`latents /
/// scaling_factor`, unchanged) and `encode` returns what `encode(...).latents` returns (the
/// pipelines multiply it by 1.0). Unlike `AutoencoderKL`, the caller must not divide by 0.18215.
///
/// Load it with `init(contentsOf:)` from a diffusers folder, its single weight file, or the
/// `taesd_decoder`/`taesd_encoder` files of madebyollin's repository (AUTOMATIC1111's
/// `models/VAE-taesd`). Only 4-channel latents (SD 1.x/2.x's `taesd`; SDXL's `taesdxl` has the
/// same shapes but another latent space) are supported; 16-channel TAESDs (SD3, FLUX) are refused.
///
/// Convolutions are built as `AutoencoderKL`'s: float32 weights, the 3x3 ones on planes of at
/// least 32x32 through float32 Winograd at either `Compute.precision` (faster than the direct
/// bf16 kernel on such planes, and more accurate), the others at `Compute.precision`.
public struct AutoencoderTiny: Sendable {
    public let config: AutoencoderTinyConfig
    /// The file or folder the model was loaded from.
    public let source: URL
    /// The file holding the decoder's weights.
    public let decoderFile: URL
    /// The file holding the encoder's weights; nil when there are none (decode-only).
    public let encoderFile: URL?
    /// Where an encoder was looked for when there is none (for `encode`'s error).
    let encoderSearch: String

    let encoderLayers: [TinyLayer]?
    let decoderLayers: [TinyLayer]

    /// Whether `encode` can run (the weights include the encoder).
    public var hasEncoder: Bool { encoderLayers != nil }
    /// The weight files used, decoder first, for recording in PNG parameters.
    public var files: [URL] { [decoderFile] + (encoderFile.map { [$0] } ?? []).filter { $0 != decoderFile } }
    /// `scaling_factor` (1.0 for TAESD).
    public var scalingFactor: Float { Float(config.scalingFactor) }
    /// Image pixels per latent pixel (8 for TAESD).
    public var downsamplingFactor: Int { config.downsamplingFactor }

    /// Builds the model from weights under diffusers' names (`decoder.layers.N…`,
    /// `encoder.layers.N…`). `encoder` nil: a decode-only model. Every tensor must have the shape
    /// the config implies.
    public init(config: AutoencoderTinyConfig, decoder: WeightSet, encoder: WeightSet?, source: URL? = nil) throws {
        try self.init(config: config, decoder: decoder, encoder: encoder, source: source,
                      encoderSearch: "the weights have no encoder.layers.* tensors")
    }

    init(config: AutoencoderTinyConfig, decoder: WeightSet, encoder: WeightSet?, source: URL?,
         encoderSearch: String) throws {
        try Self.checkSupported(config)
        self.config = config
        let decoderURL = decoder.files.first?.url ?? URL(fileURLWithPath: decoder.label)
        self.source = source ?? decoderURL
        self.decoderFile = decoderURL
        self.encoderFile = encoder?.files.first?.url
        self.encoderSearch = encoderSearch
        let activation = try TinyActivation(config.actFn)
        decoderLayers = try Self.buildDecoder(Parameters(decoder, float32Convolutions: true).scope("decoder.layers"),
                                              config, activation)
        encoderLayers = try encoder.map {
            try Self.buildEncoder(Parameters($0, float32Convolutions: true).scope("encoder.layers"), config, activation)
        }
    }

    // MARK: - Computation

    /// diffusers' `AutoencoderTiny.decode(latents).sample`: latents [B, 4, h, w] as the UNet
    /// denoises them (TAESD's scaling factor is 1) to images [B, 3, 8h, 8w] in about [-1, 1]
    /// (not clamped, as in diffusers). The decoder first soft-clamps the latents to (-3, 3) with
    /// `3 · tanh(x / 3)` and ends with `2x − 1` (TAESD itself works in [0, 1]).
    public func decode(_ latents: Tensor) -> Tensor {
        precondition(latents.rank == 4 && latents.shape[1] == config.latentChannels,
                     "taesd decode: latents \(latents.shape), expected [B, \(config.latentChannels), h, w]")
        return decoderOutput(run(decoderLayers, decoderInput(latents)))
    }

    /// diffusers' `AutoencoderTiny.encode(images).latents`: images [B, 3, H, W] in [-1, 1] to
    /// latents [B, 4, ⌈H/8⌉, ⌈W/8⌉] in the UNet's (scaled) latent space, deterministic (TAESD has no
    /// distribution to sample). The encoder first maps the images to [0, 1] with `(x + 1) / 2`.
    /// Throws when the weights have no encoder.
    public func encode(_ images: Tensor) throws -> Tensor {
        let layers = try requireEncoder()
        precondition(images.rank == 4 && images.shape[1] == config.inChannels,
                     "taesd encode: images \(images.shape), expected [B, \(config.inChannels), H, W]")
        return run(layers, encoderInput(images))
    }

    /// diffusers' `scale_latents`: latents to [0, 1] (`x / (2 · latent_magnitude) + latent_shift`,
    /// clamped), as TAESD stores latents in 8-bit images.
    public func scaleLatents(_ latents: Tensor) -> Tensor {
        var y = latents
        let (m, s) = (Float(2 * config.latentMagnitude), Float(config.latentShift))
        y.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] = min(1, max(0, p[i] / m + s)) } }
        return y
    }

    /// diffusers' `unscale_latents`, the inverse of `scaleLatents` on [0, 1].
    public func unscaleLatents(_ scaled: Tensor) -> Tensor {
        (scaled - Float(config.latentShift)) * Float(2 * config.latentMagnitude)
    }

    /// Throws, saying where the encoder was looked for, when only the decoder was loaded (so a
    /// command that will encode can stop before any work).
    public func checkEncoder() throws { _ = try requireEncoder() }

    func requireEncoder() throws -> [TinyLayer] {
        guard let encoderLayers else {
            throw ModelError.invalidInput("taesd: cannot encode: the encoder weights are missing (\(encoderSearch)); "
                + "only decoding is possible with \(decoderFile.path)")
        }
        return encoderLayers
    }

    func decoderInput(_ latents: Tensor) -> Tensor {
        var x = latents
        x.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            Compute.parallelFor(p.count, minimumPerThread: 1 << 14) { base[$0] = 3 * tanhf(base[$0] / 3) }
        }
        return x
    }

    func decoderOutput(_ x: Tensor) -> Tensor { x * 2 - 1 }

    func encoderInput(_ images: Tensor) -> Tensor { (images + 1) / 2 }

    func run(_ layers: [TinyLayer], _ input: Tensor) -> Tensor {
        var x = input
        for layer in layers { x = layer(x) }
        return x
    }

    // MARK: - Architecture

    static func checkSupported(_ c: AutoencoderTinyConfig) throws {
        if c.latentChannels != 4 {
            throw ModelError.unsupported(component: "taesd", "latent_channels \(c.latentChannels) "
                + (c.latentChannels == 16 ? "(a TAESD for SD3 or FLUX latents) " : "")
                + "(only 4-channel TAESDs, for SD 1.x/2.x latents)")
        }
        if c.upsampleFn != "nearest" {
            throw ModelError.unsupported(component: "taesd", "upsample_fn \"\(c.upsampleFn)\" (only \"nearest\")")
        }
        if c.upsamplingScalingFactor < 1 {
            throw ModelError.invalidConfig(component: "taesd", "upsampling_scaling_factor \(c.upsamplingScalingFactor) must be at least 1")
        }
        _ = try TinyActivation(c.actFn)
        for (key, list) in [("encoder_block_out_channels", c.encoderBlockOutChannels),
                            ("decoder_block_out_channels", c.decoderBlockOutChannels)] where list.isEmpty || Set(list).count > 1 {
            throw ModelError.invalidConfig(component: "taesd", "\(key) \(list) must be non-empty with equal entries "
                + "(diffusers' EncoderTiny/DecoderTiny run only those)")
        }
        if c.encoderBlockOutChannels.count != c.numEncoderBlocks.count || c.decoderBlockOutChannels.count != c.numDecoderBlocks.count {
            throw ModelError.invalidConfig(component: "taesd", "the block lists' lengths differ from the channel lists'")
        }
    }

    /// diffusers' `EncoderTiny.layers`: per stage a convolution (the first from the image, the
    /// others stride 2 without bias) and that stage's blocks, then a convolution to the latents.
    static func buildEncoder(_ p: Parameters, _ c: AutoencoderTinyConfig, _ act: TinyActivation) throws -> [TinyLayer] {
        var layers: [TinyLayer] = []
        var index = 0
        func next() -> Parameters { defer { index += 1 }; return p.scope("\(index)") }
        for (stage, blocks) in c.numEncoderBlocks.enumerated() {
            let channels = c.encoderBlockOutChannels[stage]
            layers.append(.conv(stage == 0
                ? try Conv2D(next(), in: c.inChannels, out: channels, kernel: 3)
                : try Conv2D(next(), in: channels, out: channels, kernel: 3, stride: 2, bias: false)))
            for _ in 0..<blocks { layers.append(.block(try TinyBlock(next(), in: channels, out: channels, act))) }
        }
        layers.append(.conv(try Conv2D(next(), in: c.encoderBlockOutChannels.last!, out: c.latentChannels, kernel: 3)))
        return layers
    }

    /// diffusers' `DecoderTiny.layers`: a convolution from the latents and the activation, then
    /// per stage its blocks, an upsampling and a convolution without bias (the last stage: no
    /// upsampling, a convolution with bias to the image).
    static func buildDecoder(_ p: Parameters, _ c: AutoencoderTinyConfig, _ act: TinyActivation) throws -> [TinyLayer] {
        var layers: [TinyLayer] = []
        var index = 0
        func next() -> Parameters { defer { index += 1 }; return p.scope("\(index)") }
        layers.append(.conv(try Conv2D(next(), in: c.latentChannels, out: c.decoderBlockOutChannels[0], kernel: 3)))
        layers.append(.activation(act))
        index += 1
        for (stage, blocks) in c.numDecoderBlocks.enumerated() {
            let channels = c.decoderBlockOutChannels[stage]
            let last = stage == c.numDecoderBlocks.count - 1
            for _ in 0..<blocks { layers.append(.block(try TinyBlock(next(), in: channels, out: channels, act))) }
            if !last {
                layers.append(.upsample(c.upsamplingScalingFactor))
                index += 1
            }
            layers.append(.conv(try Conv2D(next(), in: channels, out: last ? c.outChannels : channels, kernel: 3,
                                           bias: last)))
        }
        return layers
    }
}

/// The activations diffusers' `get_activation` gives `AutoencoderTiny`.
enum TinyActivation: Sendable {
    case relu, silu, gelu, mish

    init(_ name: String) throws {
        switch name {
        case "relu": self = .relu
        case "silu", "swish": self = .silu
        case "gelu": self = .gelu
        case "mish": self = .mish
        default:
            throw ModelError.unsupported(component: "taesd", "act_fn \"\(name)\" (relu, silu, swish, gelu or mish)")
        }
    }

    func apply(_ x: inout Tensor) {
        switch self {
        case .silu: x = activate(x, .silu)
        case .gelu: x = activate(x, .gelu)
        case .relu, .mish:
            let mish = self == .mish
            x.withUnsafeMutableBufferPointer { p in
                let base = p.baseAddress!, count = p.count, chunk = 1 << 14
                Compute.parallelFor((count + chunk - 1) / chunk) { c in
                    let start = c * chunk, end = min(count, start + chunk)
                    if mish {
                        // torch's softplus switches to the identity above 20.
                        for i in start..<end {
                            let v = base[i]
                            base[i] = v * tanhf(v > 20 ? v : log1pf(expf(v)))
                        }
                    } else {
                        for i in start..<end { base[i] = max(0, base[i]) }
                    }
                }
            }
        }
    }
}

/// diffusers' `AutoencoderTinyBlock`: `relu(conv(act(conv(act(conv(x))))) + skip(x))`, the skip a
/// bias-free 1x1 convolution when the channel count changes.
struct TinyBlock: Sendable {
    let conv0: Conv2D, conv1: Conv2D, conv2: Conv2D
    let skip: Conv2D?
    let activation: TinyActivation

    init(_ p: Parameters, in cin: Int, out cout: Int, _ activation: TinyActivation) throws {
        conv0 = try Conv2D(p.scope("conv.0"), in: cin, out: cout, kernel: 3)
        conv1 = try Conv2D(p.scope("conv.2"), in: cout, out: cout, kernel: 3)
        conv2 = try Conv2D(p.scope("conv.4"), in: cout, out: cout, kernel: 3)
        skip = cin == cout ? nil : try Conv2D(p.scope("skip"), in: cin, out: cout, kernel: 1, bias: false)
        self.activation = activation
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = conv0(x)
        activation.apply(&h)
        h = conv1(h)
        activation.apply(&h)
        h = conv2(h)
        let s = skip.map { $0(x) } ?? x
        h.withUnsafeMutableBufferPointer { hp in
            s.withUnsafeBufferPointer { sp in
                let (out, add, count, chunk) = (hp.baseAddress!, sp.baseAddress!, hp.count, 1 << 14)
                Compute.parallelFor((count + chunk - 1) / chunk) { c in
                    for i in (c * chunk)..<min(count, (c + 1) * chunk) { out[i] = max(0, out[i] + add[i]) }
                }
            }
        }
        return h
    }
}

/// One entry of a TAESD `nn.Sequential`.
enum TinyLayer: Sendable {
    case conv(Conv2D)
    case activation(TinyActivation)
    case block(TinyBlock)
    case upsample(Int)

    func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .conv(let conv): return conv(x)
        case .activation(let act):
            var y = x
            act.apply(&y)
            return y
        case .block(let block): return block(x)
        case .upsample(let f):
            return f == 1 ? x : x.upsampledNearest(height: x.shape[2] * f, width: x.shape[3] * f)
        }
    }
}

// MARK: - Loading

extension AutoencoderTiny {
    /// Loads TAESD from any of the layouts it is distributed in, told apart by tensor names:
    ///
    /// - a diffusers `AutoencoderTiny` folder (`config.json` with `_class_name` AutoencoderTiny and
    ///   `diffusion_pytorch_model.safetensors`, names `decoder.layers.N…`, `encoder.layers.N…`);
    /// - that weight file alone (stable-diffusion.cpp's `--taesd`), with the config.json beside it
    ///   when that names AutoencoderTiny, else TAESD's defaults (`AutoencoderTinyConfig()`);
    /// - madebyollin's separate `taesd_decoder` / `taesd_encoder` files (`.safetensors` or `.pth`,
    ///   AUTOMATIC1111's `models/VAE-taesd`), whose names are the indices of TAESD's own
    ///   `nn.Sequential` (`1.weight`, `3.conv.0.weight`: the decoder's start one later than
    ///   diffusers', after its parameter-free clamp). Given either file, the other is looked for
    ///   beside it under the same name with `encoder` and `decoder` swapped, with any of the
    ///   extensions `.safetensors`, `.pth`, `.pt`, `.ckpt`, `.bin`. The decoder is required; without
    ///   an encoder the model decodes only (`hasEncoder` false; `encode` throws, naming the paths
    ///   tried);
    /// - a folder holding `taesd_decoder.safetensors` or `.pth` and no diffusers weights (A1111's folder).
    ///
    /// Throws `WeightsError` for unreadable, truncated or foreign files, missing tensors, wrong
    /// shapes and non-finite values (naming the file and tensor), and `ModelError` for what this
    /// engine does not run (16-channel TAESDs for SD3/FLUX, other activations or resizes).
    public init(contentsOf url: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw WeightsError.unreadable(path: url.path, reason: "no such file or folder")
        }
        if isDirectory.boolValue {
            let configURL = url.appendingPathComponent("config.json")
            let exists = { (name: String) in FileManager.default.fileExists(atPath: url.appendingPathComponent(name).path) }
            let diffusersNames = DiffusersFolder.singleFileNames + DiffusersFolder.shardIndexNames
                + DiffusersFolder.pickleFileNames + DiffusersFolder.pickleShardIndexNames
            if !exists("config.json") || !diffusersNames.contains(where: exists) {
                // Not a diffusers folder: madebyollin's files, as in A1111's models/VAE-taesd.
                let candidates = ["taesd_decoder.safetensors", "taesd_decoder.pth"]
                guard let name = candidates.first(where: exists) else {
                    throw WeightsError.noWeights(directory: url.path, lookedFor: ["config.json with diffusion_pytorch_model.safetensors "
                        + "(a diffusers AutoencoderTiny folder)"] + candidates)
                }
                try self.init(contentsOf: url.appendingPathComponent(name))
                return
            }
            let config = try AutoencoderTinyConfig.load(from: configURL)
            if let name = config.className, name != "AutoencoderTiny" {
                throw ModelError.invalidConfig(component: "taesd", "\(configURL.path) describes a \(name), not an AutoencoderTiny (TAESD)")
            }
            let weights = try DiffusersFolder.weights(in: url, label: "taesd (\(url.lastPathComponent))")
            guard weights.names.contains(where: { $0.hasPrefix("decoder.layers.") }) else {
                throw WeightsError.corruptFile(path: weights.files.first?.url.path ?? url.path,
                                               problem: Self.foreignMessage(weights.names))
            }
            try Self.checkFinite(weights.files)
            try Self.checkLatentChannels(weights, path: weights.files.first?.url.path ?? url.path)
            let hasEncoder = weights.names.contains { $0.hasPrefix("encoder.layers.") }
            try self.init(config: config, decoder: weights, encoder: hasEncoder ? weights : nil, source: url,
                          encoderSearch: "the weights in \(url.path) have no encoder.layers.* tensors")
            return
        }

        let file = try SafeTensorsFile.open(url)
        let config = try Self.configBeside(url) ?? AutoencoderTinyConfig()
        switch try Self.layout(of: file) {
        case .diffusers:
            try Self.checkFinite([file])
            let weights = try WeightSet(files: [file], label: "taesd (\(url.lastPathComponent))")
            try Self.checkLatentChannels(weights, path: url.path)
            let hasEncoder = file.names.contains { $0.hasPrefix("encoder.layers.") }
            try self.init(config: config, decoder: weights, encoder: hasEncoder ? weights : nil, source: url,
                          encoderSearch: "\(url.path) has no encoder.layers.* tensors")
        case .decoder:
            let (encoderURL, tried) = Self.sibling(of: url, replacing: "decoder", with: "encoder")
            let encoderFile = try encoderURL.map { try SafeTensorsFile.open($0) }
            if let encoderFile, try Self.layout(of: encoderFile) != .encoder {
                throw WeightsError.corruptFile(path: encoderFile.url.path, problem: "is not a TAESD encoder file (names 0.weight, "
                    + "1.conv.0.weight, …) although it is named like the encoder of \(url.lastPathComponent)")
            }
            try self.init(config: config, source: url, decoderFile: file, encoderFile: encoderFile,
                          encoderSearch: tried.isEmpty
                              ? "the file name \(url.lastPathComponent) has no \"decoder\" to replace with \"encoder\" to find it"
                              : "looked for " + tried.joined(separator: ", "))
        case .encoder:
            let (decoderURL, tried) = Self.sibling(of: url, replacing: "encoder", with: "decoder")
            guard let decoderURL else {
                throw WeightsError.noWeights(directory: url.deletingLastPathComponent().path, lookedFor: tried.isEmpty
                    ? ["a TAESD decoder file (\(url.lastPathComponent) is an encoder, and its name has no \"encoder\" to replace with \"decoder\")"]
                    : tried.map { "\($0) (the decoder for the encoder \(url.lastPathComponent))" })
            }
            let decoderFile = try SafeTensorsFile.open(decoderURL)
            guard try Self.layout(of: decoderFile) == .decoder else {
                throw WeightsError.corruptFile(path: decoderURL.path, problem: "is not a TAESD decoder file (names 1.weight, "
                    + "3.conv.0.weight, …) although it is named like the decoder of \(url.lastPathComponent)")
            }
            try self.init(config: config, source: url, decoderFile: decoderFile, encoderFile: file, encoderSearch: "")
        }
    }

    /// A model from madebyollin's separate files (names are `nn.Sequential` indices).
    private init(config: AutoencoderTinyConfig, source: URL, decoderFile: SafeTensorsFile, encoderFile: SafeTensorsFile?,
                 encoderSearch: String) throws {
        try Self.checkFinite([decoderFile] + (encoderFile.map { [$0] } ?? []))
        let decoder = Self.sequentialSet(decoderFile, as: "decoder.layers", offset: 1)
        try Self.checkLatentChannels(decoder, path: decoderFile.url.path)
        try self.init(config: config, decoder: decoder,
                      encoder: encoderFile.map { Self.sequentialSet($0, as: "encoder.layers", offset: 0) },
                      source: source, encoderSearch: encoderSearch)
    }

    enum FileLayout: Equatable { case diffusers, decoder, encoder }

    /// Which layout a file's tensor names are in.
    static func layout(of file: SafeTensorsFile) throws -> FileLayout {
        let names = file.names
        if names.contains(where: { $0.hasPrefix("decoder.layers.") }) { return .diffusers }
        if names.contains(where: { $0.hasPrefix("encoder.layers.") }) {
            throw WeightsError.corruptFile(path: file.url.path, problem: "holds a TAESD encoder (encoder.layers.*) but no "
                + "decoder.layers.* tensors; the decoder is required")
        }
        let sequential = !names.isEmpty && names.allSatisfy { Int($0.prefix { $0 != "." }) != nil }
        if sequential && file.contains("0.weight") { return .encoder }
        if sequential && file.contains("1.weight") { return .decoder }
        throw WeightsError.corruptFile(path: file.url.path, problem: foreignMessage(names))
    }

    static func foreignMessage(_ names: [String]) -> String {
        let sample = names.prefix(3).map { "\"\($0)\"" }.joined(separator: ", ")
        let kl = names.contains { $0.hasPrefix("decoder.conv_in.") || $0.hasPrefix("first_stage_model.") }
        return "is not a TAESD (AutoencoderTiny) weight file: expected diffusers' names decoder.layers.N… or the N.… names "
            + "of madebyollin's taesd_decoder/taesd_encoder files, found \(names.isEmpty ? "no tensors" : sample + (names.count > 3 ? ", …" : ""))"
            + (kl ? " (this looks like a full AutoencoderKL VAE)" : "")
    }

    /// The tensors of a `nn.Sequential` state dict under diffusers' names: stored `i.rest` shown
    /// as `prefix.(i − offset).rest`.
    static func sequentialSet(_ file: SafeTensorsFile, as prefix: String, offset: Int) -> WeightSet {
        var renaming: [String: WeightSet.StoredTensor] = [:]
        for name in file.names {
            guard let dot = name.firstIndex(of: "."), let i = Int(name[..<dot]), i >= offset else { continue }
            renaming["\(prefix).\(i - offset)\(name[dot...])"] = .init(name)
        }
        let kind = prefix.hasPrefix("decoder") ? "decoder" : "encoder"
        return WeightSet(file: file, renaming: renaming,
                         label: "taesd \(kind) (\(file.url.lastPathComponent), nn.Sequential names\(offset > 0 ? " one index higher" : ""))")
    }

    /// The file beside `url` named like it with `from` (last occurrence, any case) replaced by
    /// `to`, trying the common tensor-file extensions; and the paths tried.
    static func sibling(of url: URL, replacing from: String, with to: String) -> (URL?, [String]) {
        let name = url.lastPathComponent
        guard let range = name.range(of: from, options: [.backwards, .caseInsensitive]) else { return (nil, []) }
        let matched = name[range]
        let replacement = matched == matched.uppercased() ? to.uppercased()
            : matched.first!.isUppercase ? to.prefix(1).uppercased() + to.dropFirst() : to
        let swapped = name.replacingCharacters(in: range, with: replacement)
        let stem = (swapped as NSString).deletingPathExtension
        let directory = url.deletingLastPathComponent()
        var names = [swapped]
        for ext in ["safetensors", "pth", "pt", "ckpt", "bin"] where !names.contains("\(stem).\(ext)") {
            names.append("\(stem).\(ext)")
        }
        let candidates = names.map { directory.appendingPathComponent($0) }
        return (candidates.first { FileManager.default.fileExists(atPath: $0.path) }, candidates.map(\.path))
    }

    /// The config.json beside a weight file when it describes an AutoencoderTiny.
    static func configBeside(_ url: URL) throws -> AutoencoderTinyConfig? {
        let configURL = url.deletingLastPathComponent().appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: configURL),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              object["_class_name"] as? String == "AutoencoderTiny" else { return nil }
        return try AutoencoderTinyConfig.decode(data, path: configURL.path)
    }

    /// Refuses latents of other than 4 channels with a clear message before shapes are compared.
    static func checkLatentChannels(_ weights: WeightSet, path: String) throws {
        guard let shape = weights.shape(of: "decoder.layers.0.weight"), shape.count == 4, shape[1] != 4 else { return }
        throw ModelError.unsupported(component: "taesd", "\(path): a decoder for \(shape[1]) latent channels"
            + (shape[1] == 16 ? " (a TAESD for SD3 or FLUX latents)" : "") + " (only 4-channel TAESDs, for SD 1.x/2.x latents)")
    }

    /// Every tensor of `files` must be finite.
    static func checkFinite(_ files: [SafeTensorsFile]) throws {
        for file in files {
            for name in file.names {
                let t = try file.tensor(name)
                let finite = t.withUnsafeBufferPointer { p in p.allSatisfy { $0.isFinite } }
                if !finite {
                    throw WeightsError.corruptTensor(path: file.url.path, tensor: name,
                                                     problem: "has non-finite values (NaN or infinity); the file is damaged")
                }
            }
        }
    }
}
