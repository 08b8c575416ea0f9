import Foundation
import Tensors

/// How a tiled VAE pass cuts its work.
///
/// The tiled pass computes the same function as the whole-image pass: each layer runs tile by
/// tile over a map kept in a `CanvasStore`, every convolution reads its tile with the one-pixel
/// border it needs from the neighbouring tiles, and every GroupNorm uses the mean and variance of
/// the whole map, accumulated while the previous layer wrote its tiles. So tile borders cannot
/// show and colours do not shift from tile to tile. Memory is bounded by the tile size plus the
/// maps small enough to keep in memory; larger maps go to temporary files. A resnet writes its
/// output over its input map (they meet pixel by pixel only), so a block needs two full-size
/// maps of disk, not three.
///
/// The one exception is the mid-block attention, which is global: above `attentionTokenLimit`
/// latent positions it attends within windows of at most that many positions instead.
public struct VAETiling: Sendable, Equatable {
    /// Floats (channels x pixels) in one tile of a layer's output; sets each layer's tile side.
    public var tileElements: Int
    /// A fixed tile side, in output pixels of every layer, instead of `tileElements`.
    public var tileSide: Int?
    /// Maps of at most this many bytes stay in memory; larger ones live in temporary files.
    public var memoryLimit: Int
    /// Where those files go (they are unlinked at creation and vanish with the process).
    public var temporaryDirectory: String
    /// How those files hold values: `.bfloat16` halves the disk a huge image needs, and rounds
    /// the stored activations to 8 significant bits (on the tiny test models, with every map in
    /// a file, a decoded pixel moved by at most about 1 % of the value range).
    public var fileFormat: CanvasStore.FileFormat
    /// The largest number of latent positions the mid-block attention sees at once.
    public var attentionTokenLimit: Int
    /// 360° images: convolutions wrap around the left and right edges instead of seeing zeros.
    public var circular: Bool
    /// Pictures of at most this many pixels (and not 360°) that a pipeline decodes with
    /// `.tiled` go through the whole-image decode instead: the same image, about twice as fast
    /// at 512x512, and at most about 2 GiB of activations with SD's VAE. 0: always tiles.
    public var wholeImagePixels: Int
    /// The processes of a job that share the tiles (an MPI job), or nil: this process alone.
    /// Each computes whole rows of tiles, receives the rows around them that its convolutions
    /// read from the others, and merges every tile's GroupNorm sums in tile order, so the result
    /// is that of one process bit for bit; every process returns the whole result.
    public var processes: (any ProcessGroup)?

    public init(tileElements: Int = 16 << 20, tileSide: Int? = nil, memoryLimit: Int = 256 << 20,
                temporaryDirectory: String = NSTemporaryDirectory(), fileFormat: CanvasStore.FileFormat = .float32,
                attentionTokenLimit: Int = 65536, circular: Bool = false, wholeImagePixels: Int = 1024 * 512) {
        precondition(tileSide.map { $0 > 0 } ?? true && tileElements > 0 && attentionTokenLimit > 0)
        self.tileElements = tileElements
        self.tileSide = tileSide
        self.memoryLimit = memoryLimit
        self.temporaryDirectory = temporaryDirectory
        self.fileFormat = fileFormat
        self.attentionTokenLimit = attentionTokenLimit
        self.circular = circular
        self.wholeImagePixels = wholeImagePixels
    }

    public static func == (a: VAETiling, b: VAETiling) -> Bool {
        a.tileElements == b.tileElements && a.tileSide == b.tileSide && a.memoryLimit == b.memoryLimit
            && a.temporaryDirectory == b.temporaryDirectory && a.fileFormat == b.fileFormat
            && a.attentionTokenLimit == b.attentionTokenLimit && a.circular == b.circular
            && a.wholeImagePixels == b.wholeImagePixels && a.processes === b.processes
    }
}

extension VAETiling {
    /// The tile side of a convolution from `input` to `output` channels.
    func side(input: Int, output: Int) -> Int {
        // Sides of whole 32-pixel panels let the bf16 convolution skip its im2col buffer, and
        // of 64 pixels fill the Winograd transforms' 16-tile vectors.
        let fitting = Int(Double(tileElements / max(input, output)).squareRoot())
        return tileSide ?? (fitting >= 128 ? fitting / 64 * 64 : fitting >= 64 ? fitting / 32 * 32 : max(8, fitting))
    }
}

extension AutoencoderKL {
    /// `decode(_:)` computed in tiles (see `VAETiling`): the same images, with memory bounded by
    /// the tiles, and with `tiling.circular` an image whose left and right edges join. With a
    /// `journal` (one image only) the pass records its progress after its tiles and continues a
    /// pass that the journal's directory holds (see `TiledPassJournal`), to the same bits.
    public func decode(_ latents: Tensor, tiling: VAETiling, journal: TiledPassJournal? = nil) throws -> Tensor {
        if let journal {
            guard latents.shape[0] == 1 else { throw ModelError.invalidInput("a journaled decode takes one image, not \(latents.shape[0])") }
            return try journaledPass(.decode, latents, tiling: tiling, journal: journal)
        }
        let runner = TiledRunner(tiling: tiling, groups: config.normNumGroups)
        let images = try (0..<latents.shape[0]).map { b in
            try runner.whole(decoderLayers(runner, try runner.map(latents.batch(b))))
        }
        return images.count == 1 ? images[0] : Tensor.concatenate(images, dimension: 0)
    }

    /// One journaled pass of `layers` over `input`: a finished result the journal kept is
    /// returned at once; otherwise the pass runs, resuming where the journal's record stands.
    private func journaledPass(_ kind: TiledPassJournal.Kind, _ input: Tensor, tiling: VAETiling,
                               journal: TiledPassJournal) throws -> Tensor {
        let planner = DiskPlanner(tiling: tiling)
        let fingerprint = Fingerprinter()
        let (c, h, w) = (input.shape[1], input.shape[2], input.shape[3])
        let out: DiskPlanner.Map
        let encoder = kind == .encode ? self.encoder : nil
        if kind == .encode {
            guard let encoder else { throw ModelError.invalidInput(Self.noEncoderMessage) }
            out = try encoderLayers(planner, encoder, planner.input(channels: c, height: h, width: w))
            _ = try encoderLayers(fingerprint, encoder, .init(channels: c, height: h, width: w))
        } else {
            out = try decoderLayers(planner, planner.input(channels: c, height: h, width: w))
            _ = try decoderLayers(fingerprint, .init(channels: c, height: h, width: w))
        }
        var identity = fingerprint.hash
        identity.add(String(describing: config))
        func attempt() throws -> Tensor {
            if let kept = try journal.begin(kind, input: input, output: [1, out.channels, out.height, out.width], tiling: tiling,
                                            groups: config.normNumGroups, layers: planner.layers, model: identity) {
                return kept
            }
            let runner = TiledRunner(tiling: tiling, groups: config.normNumGroups, journal: journal)
            // the input map is passed as a temporary, so the encoder releases it after its first layer
            let output = try encoder.map { try encoderLayers(runner, $0, try runner.map(input)) }
                ?? decoderLayers(runner, try runner.map(input))
            let result = try output.store!.tensor()
            try journal.finish(result)
            return result
        }
        do {
            return try attempt()
        } catch let error as TiledPassJournalError {
            // a record that does not fit the pass it claims to be: start over without it
            guard case .damaged = error, journal.resumedAt == nil else { throw error }
            journal.discard(error)
            return try attempt()
        }
    }

    /// The layers of the decoder, in order, as one pass.
    private func decoderLayers<P: VAEPass>(_ pass: P, _ latents: consuming P.Map) throws -> P.Map {
        var h = consume latents
        if let postQuantConv { h = try pass.convolve(h, norm: nil, postQuantConv) }
        h = try pass.convolve(h, norm: nil, decoder.convIn)
        h = try pass.mid(h, decoder.mid)
        for block in decoder.blocks {
            for resnet in block.resnets { h = try pass.resnet(h, resnet) }
            if let up = block.upsampler { h = try pass.convolve(h, norm: nil, up.conv, upsample: true) }
        }
        return try pass.convolve(h, norm: decoder.normOut, decoder.convOut)
    }

    /// The layers of the encoder, in order, as one pass. The image map is released after the
    /// first convolution: at full resolution it is worth keeping off the disk.
    private func encoderLayers<P: VAEPass>(_ pass: P, _ encoder: VAEEncoder, _ images: consuming P.Map) throws -> P.Map {
        var h = try pass.convolve(images, norm: nil, encoder.convIn)
        _ = consume images
        for block in encoder.blocks {
            for resnet in block.resnets { h = try pass.resnet(h, resnet) }
            if let down = block.downsampler { h = try pass.convolve(h, norm: nil, down.conv) }
        }
        h = try pass.mid(h, encoder.mid)
        h = try pass.convolve(h, norm: encoder.normOut, encoder.convOut)
        if let quantConv { h = try pass.convolve(h, norm: nil, quantConv) }
        return h
    }

    /// The most bytes of temporary files a tiled pass with `tiling` holds at once, for an image of
    /// `height` x `width` pixels (`encoding`: the encoder's pass over it, else the decoder's pass
    /// producing it). Counted from the same layer sequence the passes run; 0 when every map fits
    /// under `tiling.memoryLimit`. `journaled`: the bound for a pass with a `TiledPassJournal`,
    /// whose directory also holds float32 copies of the maps kept in memory (those of the layer
    /// under way and of the last record: at most twice the largest set a layer keeps in memory)
    /// and the largest tile written over a residual in a file (its redo copy).
    public func temporaryFileBytes(height: Int, width: Int, tiling: VAETiling, encoding: Bool, journaled: Bool = false) -> Int {
        let planner = DiskPlanner(tiling: tiling)
        let scale = 1 << (config.blockOutChannels.count - 1)
        if encoding {
            guard let encoder else { return 0 }
            _ = try? encoderLayers(planner, encoder, planner.input(channels: config.inChannels, height: height, width: width))
        } else {
            _ = try? decoderLayers(planner, planner.input(channels: config.latentChannels,
                                                          height: height / scale, width: width / scale))
        }
        return planner.peak + (journaled ? 2 * planner.mirrorPeak + planner.redoPeak : 0)
    }

    /// `encode(_:)` computed in tiles (see `VAETiling`); with a `journal` (one image only),
    /// resumable as `decode(_:tiling:journal:)`.
    public func encode(_ images: Tensor, tiling: VAETiling, journal: TiledPassJournal? = nil) throws -> (mean: Tensor, std: Tensor) {
        guard let encoder else { throw ModelError.invalidInput(Self.noEncoderMessage) }
        if let journal {
            guard images.shape[0] == 1 else { throw ModelError.invalidInput("a journaled encode takes one image, not \(images.shape[0])") }
            return distribution(try journaledPass(.encode, images, tiling: tiling, journal: journal))
        }
        let runner = TiledRunner(tiling: tiling, groups: config.normNumGroups)
        let moments = try (0..<images.shape[0]).map { b in
            try runner.whole(encoderLayers(runner, encoder, try runner.map(images.batch(b))))
        }
        return distribution(moments.count == 1 ? moments[0] : Tensor.concatenate(moments, dimension: 0))
    }
}

/// A map produced by a tiled pass, with the group statistics of its values (nil when its
/// channels do not divide into the groups: images and latents, which no GroupNorm reads).
/// A class: a resumed pass fills in, in place, the maps of the layers it skipped.
final class TiledMap {
    let channels: Int, height: Int, width: Int
    /// The layer that wrote it (-1: the pass's input).
    let producer: Int
    /// The layer whose map holds its values, and that map's channels: its own, or for an
    /// overlay the residual's (a journal names files by them).
    var storage: Int, storageChannels: Int
    /// nil: a layer skipped on resume, until the journal's files fill it in.
    var store: CanvasStore?
    var statistics: GroupStatistics?
    /// Whether `store` writes over the residual's map.
    var isOverlay = false
    /// The producing layer's tiles, in order, and how many of them are written.
    var tiles: [TileRect] = []
    var written = 0
    /// A journal's float32 copy of a map kept in memory, and how many tiles it holds.
    var mirror: CanvasStore?
    var mirrored = 0
    /// With several processes: the rows each rank computed. Only those rows, and the rows
    /// received since, are valid in this process's store. nil: every row, everywhere.
    var owners: [Range<Int>]?

    init(channels: Int, height: Int, width: Int, producer: Int, store: CanvasStore?) {
        (self.channels, self.height, self.width, self.producer, self.store) = (channels, height, width, producer, store)
        (storage, storageChannels) = (producer, channels)
    }

    /// Makes it an overlay on `residual`'s storage.
    func overlaying(_ residual: TiledMap) {
        (isOverlay, storage, storageChannels) = (true, residual.storage, residual.storageChannels)
    }

    var isComplete: Bool { written == tiles.count }
    /// Whether its values live in a file (else in memory), decided by size as `CanvasStore` does.
    func isFileBacked(_ tiling: VAETiling) -> Bool { storageChannels * height * width * 4 > tiling.memoryLimit }
}

/// One tile of a layer's output.
struct TileRect: Equatable {
    let rows: Range<Int>, columns: Range<Int>
}

/// One layer-by-layer pass over whole maps. Every VAE layer is a convolution of the form
/// `TiledRunner.convolve` computes or the mid-block attention; resnets and mid-blocks are built
/// from those two, so the runner that computes a pass and the planner that sizes its disk walk
/// the same sequence.
protocol VAEPass {
    associatedtype Map
    func convolve(_ input: Map, norm: GroupNorm?, _ conv: Conv2D, upsample: Bool, residual: Map?,
                  shortcut: Conv2D?, consumingResidual: Bool) throws -> Map
    func attend(_ input: Map, norm: GroupNorm, _ attention: Attention) throws -> Map
}

extension VAEPass {
    func convolve(_ input: Map, norm: GroupNorm?, _ conv: Conv2D, upsample: Bool = false) throws -> Map {
        try convolve(input, norm: norm, conv, upsample: upsample, residual: nil, shortcut: nil, consumingResidual: false)
    }

    /// A resnet writes its output over its input, which it no longer needs by then.
    func resnet(_ x: Map, _ block: ResnetBlock2D) throws -> Map {
        precondition(block.timeProjection == nil && block.outputScale == 1, "tiled resnet: VAE blocks only")
        let h = try convolve(x, norm: block.norm1, block.conv1)
        return try convolve(h, norm: block.norm2, block.conv2, upsample: false, residual: x,
                            shortcut: block.shortcut, consumingResidual: true)
    }

    func mid(_ x: Map, _ block: VAEMidBlock) throws -> Map {
        var h = try resnet(x, block.first)
        if let norm = block.norm, let attention = block.attention { h = try attend(h, norm: norm, attention) }
        return try resnet(h, block.second)
    }
}

/// Sizes the temporary files of a pass without computing it: the maps alive during each layer
/// (its input, its residual and its output unless written over the residual) that exceed the
/// memory limit.
final class DiskPlanner: VAEPass {
    struct Map {
        let channels: Int, height: Int, width: Int
    }

    let tiling: VAETiling
    private(set) var peak = 0
    /// The most bytes of maps kept in memory that one layer has alive (a journal copies them).
    private(set) var mirrorPeak = 0
    /// Layers in the pass.
    private(set) var layers = 0
    /// The bytes of the largest tile written over a residual in a file.
    private(set) var redoPeak = 0

    init(tiling: VAETiling) { self.tiling = tiling }

    private func mirrorBytes(_ m: Map) -> Int {
        let bytes = m.channels * m.height * m.width * 4
        return bytes > tiling.memoryLimit ? 0 : bytes
    }

    func input(channels: Int, height: Int, width: Int) -> Map {
        let map = Map(channels: channels, height: height, width: width)
        peak = max(peak, fileBytes(map))
        return map
    }

    private func fileBytes(_ m: Map) -> Int {
        let count = m.channels * m.height * m.width
        return count * 4 > tiling.memoryLimit ? count * tiling.fileFormat.size : 0
    }

    func convolve(_ input: Map, norm: GroupNorm?, _ conv: Conv2D, upsample: Bool, residual: Map?,
                  shortcut: Conv2D?, consumingResidual: Bool) throws -> Map {
        let (k, s, pad) = (conv.weight.shape[2], conv.stride, conv.padding)
        let factor = upsample ? 2 : 1
        let (hc, wc) = (input.height * factor, input.width * factor)
        let hout = (hc + pad.top + pad.bottom - k) / s + 1
        let wout = tiling.circular ? (wc + s - 1) / s : (wc + pad.left + pad.right - k) / s + 1
        let output = Map(channels: conv.weight.shape[0], height: hout, width: wout)
        let overlaid = consumingResidual && residual.map {
            $0.channels >= output.channels && $0.height == hout && $0.width == wout
        } ?? false
        peak = max(peak, fileBytes(input) + (residual.map(fileBytes) ?? 0) + (overlaid ? 0 : fileBytes(output)))
        // an overlay kept in memory gets its own copy: the residual's copy must stay intact
        mirrorPeak = max(mirrorPeak, mirrorBytes(input) + (residual.map(mirrorBytes) ?? 0) + mirrorBytes(output))
        if overlaid, let residual, fileBytes(residual) > 0 {
            let side = tiling.side(input: input.channels, output: output.channels)
            redoPeak = max(redoPeak, 80 + 4 * output.channels * min(side, hout) * min(side, wout))
        }
        layers += 1
        return output
    }

    func attend(_ input: Map, norm: GroupNorm, _ attention: Attention) throws -> Map {
        peak = max(peak, 2 * fileBytes(input))
        mirrorPeak = max(mirrorPeak, 2 * mirrorBytes(input))
        layers += 1
        return input
    }
}

/// Hashes what identifies a pass's weights without reading every one: each layer's shapes,
/// biases and normalisation parameters, in pass order (a journal refuses another VAE's record).
final class Fingerprinter: VAEPass {
    typealias Map = DiskPlanner.Map
    private(set) var hash = FNV1a()

    private func add(_ t: Tensor?) {
        guard let t else { return hash.add(0) }
        for d in t.shape { hash.add(UInt64(d)) }
        t.withUnsafeBufferPointer { for x in $0 { hash.add(UInt64(x.bitPattern)) } }
    }

    private func add(_ norm: GroupNorm?) {
        guard let norm else { return hash.add(1) }
        hash.add(UInt64(norm.groups))
        hash.add(UInt64(norm.eps.bitPattern))
        add(norm.weight)
        add(norm.bias)
    }

    private func add(_ conv: Conv2D?) {
        guard let conv else { return hash.add(2) }
        for d in conv.weight.shape { hash.add(UInt64(d)) }
        add(conv.bias)
        for p in [conv.stride, conv.padding.top, conv.padding.bottom, conv.padding.left, conv.padding.right] {
            hash.add(UInt64(bitPattern: Int64(p)))
        }
    }

    func convolve(_ input: Map, norm: GroupNorm?, _ conv: Conv2D, upsample: Bool, residual: Map?,
                  shortcut: Conv2D?, consumingResidual: Bool) throws -> Map {
        add(norm)
        add(conv)
        add(shortcut)
        hash.add(upsample ? 3 : 4)
        return input
    }

    func attend(_ input: Map, norm: GroupNorm, _ attention: Attention) throws -> Map {
        add(norm)
        for l in [attention.toQ, attention.toK, attention.toV, attention.toOut] { add(l.bias) }
        hash.add(UInt64(attention.heads))
        return input
    }
}

/// Runs VAE layers over `TiledMap`s tile by tile.
struct TiledRunner: VAEPass {
    let tiling: VAETiling
    let groups: Int
    /// Records progress and resumes (nil: a pass that cannot be resumed).
    var journal: TiledPassJournal? = nil

    /// A new map for layer `producer`: in memory, in an unlinked temporary file, or with a
    /// journal in a named file of its directory.
    func newStore(channels: Int, height: Int, width: Int, producer: Int) throws -> CanvasStore {
        if let journal, producer >= 0, channels * height * width * 4 > tiling.memoryLimit {
            return try journal.mapFile(producer: producer, channels: channels, height: height, width: width,
                                       format: tiling.fileFormat, create: true)
        }
        return try CanvasStore(channels: channels, height: height, width: width, memoryLimit: tiling.memoryLimit,
                               directory: tiling.temporaryDirectory, fileFormat: tiling.fileFormat)
    }

    func newStatistics(channels: Int) -> GroupStatistics? {
        channels % groups == 0 ? GroupStatistics(groups: groups) : nil
    }

    func map(_ tensor: Tensor) throws -> TiledMap {
        let (c, h, w) = (tensor.shape[1], tensor.shape[2], tensor.shape[3])
        let map = TiledMap(channels: c, height: h, width: w, producer: -1, store: nil)
        map.tiles = [TileRect(rows: 0..<h, columns: 0..<w)]
        // a resumed pass that starts past the first layer never reads it
        if journal?.resumesAfterFirstLayer == true { return map }
        try fill(map, from: tensor)
        return map
    }

    /// The pass's input map holding `tensor`, with its statistics.
    func fill(_ map: TiledMap, from tensor: Tensor) throws {
        let store = try newStore(channels: map.channels, height: map.height, width: map.width, producer: -1)
        try store.write(tensor, row: 0, column: 0)
        var statistics = newStatistics(channels: map.channels)
        statistics?.accumulate(tensor)
        (map.store, map.statistics, map.written) = (store, statistics, 1)
    }

    /// The tiles of a `height` x `width` output of side `side`, in the order a pass writes them
    /// (the statistics are summed in this order, so a resumed pass keeps it).
    private func grid(height: Int, width: Int, side: Int) -> [TileRect] {
        stride(from: 0, to: height, by: side).flatMap { oy in
            stride(from: 0, to: width, by: side).map { ox in
                TileRect(rows: oy..<min(height, oy + side), columns: ox..<min(width, ox + side))
            }
        }
    }

    /// One layer: its output map, tile by tile from `compute`, with the statistics of what it
    /// wrote. With a journal the layer may be skipped (a resumed pass past it), start from the
    /// journal's files, and records its progress after its tiles.
    /// `inputRows`: the input rows a band of output rows reads (with several processes, each
    /// receives those its rows of tiles read before computing them).
    private func layer(input: TiledMap, residual: TiledMap?, overlays: Bool, channels: Int, height: Int, width: Int,
                       tiles: [TileRect], inputRows: (Range<Int>) -> Range<Int>,
                       _ compute: (TileRect) throws -> Tensor) throws -> TiledMap {
        if let group = processes {
            precondition(journal == nil, "a journaled pass runs in one process")
            return try sharedLayer(group, input: input, residual: residual, overlays: overlays, channels: channels,
                                   height: height, width: width, tiles: tiles, inputRows: inputRows, compute)
        }
        let index = journal?.nextLayer() ?? 0
        if let journal, journal.skips(index) {
            let placeholder = TiledMap(channels: channels, height: height, width: width, producer: index, store: nil)
            if overlays { placeholder.overlaying(residual!) }
            return placeholder
        }
        let output: TiledMap, start: Int
        var statistics: GroupStatistics?
        if let journal, let restored = try journal.restore(layer: index, input: input, residual: residual, overlays: overlays,
                                                           channels: channels, height: height, width: width,
                                                           tiles: tiles, runner: self) {
            (output, statistics, start) = restored
        } else {
            try journal?.starting(layer: index, tiles: tiles.count, input: input, residual: residual,
                                  fileOutput: overlays ? residual!.isFileBacked(tiling)
                                      : channels * height * width * 4 > tiling.memoryLimit)
            output = TiledMap(channels: channels, height: height, width: width, producer: index, store: nil)
            if overlays {
                output.store = residual!.store!.overlay(channels: channels)
                output.overlaying(residual!)
            } else {
                output.store = try newStore(channels: channels, height: height, width: width, producer: index)
            }
            output.tiles = tiles
            statistics = newStatistics(channels: channels)
            start = 0
        }
        for t in start..<tiles.count {
            let y = try compute(tiles[t])
            statistics?.accumulate(y)
            if let journal {
                try journal.write(y, tile: t, layer: index, output: output, statistics: statistics, input: input, residual: residual)
            } else {
                try output.store!.write(y, row: tiles[t].rows.lowerBound, column: tiles[t].columns.lowerBound)
                output.written = t + 1
            }
        }
        output.statistics = statistics
        return output
    }

    /// `conv(silu(norm(x)))`, optionally on the 2x nearest upsampling of the input, plus
    /// `shortcut(residual)` (or `residual`) — every convolution of the VAE has this form. With
    /// `consumingResidual` the output is written over the residual's map (see `CanvasStore.overlay`),
    /// which the caller must not use afterwards.
    func convolve(_ input: TiledMap, norm: GroupNorm?, _ conv: Conv2D, upsample: Bool,
                  residual: TiledMap?, shortcut: Conv2D?, consumingResidual: Bool) throws -> TiledMap {
        let (cin, cout, k) = (input.channels, conv.weight.shape[0], conv.weight.shape[2])
        let (s, pad, circular) = (conv.stride, conv.padding, tiling.circular)
        let factor = upsample ? 2 : 1
        let (hc, wc) = (input.height * factor, input.width * factor)  // the convolution's input
        let hout = (hc + pad.top + pad.bottom - k) / s + 1
        let wout = circular ? (wc + s - 1) / s : (wc + pad.left + pad.right - k) / s + 1
        let side = tiling.side(input: cin, output: cout)
        let overlays = consumingResidual && residual.map { $0.channels >= cout && $0.height == hout && $0.width == wout } ?? false

        return try layer(input: input, residual: residual, overlays: overlays, channels: cout, height: hout, width: wout,
                         tiles: grid(height: hout, width: wout, side: side), inputRows: { rows in
            let top = rows.lowerBound * s - pad.top, bottom = (rows.upperBound - 1) * s - pad.top + k
            return floorDivide(max(top, 0), factor)..<(floorDivide(min(bottom, hc) - 1, factor) + 1)
        }) { tile in
            let (rows, columns) = (tile.rows, tile.columns)
            // The convolution input this tile needs, and the part of it outside the map,
            // which the convolution pads with zeros (or, wrapping, reads from the other side).
            let top = rows.lowerBound * s - pad.top, bottom = (rows.upperBound - 1) * s - pad.top + k
            let left = columns.lowerBound * s - pad.left, right = (columns.upperBound - 1) * s - pad.left + k
            let y0 = max(top, 0), y1 = min(bottom, hc)
            let x0 = circular ? left : max(left, 0), x1 = circular ? right : min(right, wc)
            let tilePadding = Padding2D(top: y0 - top, bottom: bottom - y1, left: x0 - left, right: right - x1)

            let sy0 = floorDivide(y0, factor), sy1 = floorDivide(y1 - 1, factor) + 1
            let sx0 = floorDivide(x0, factor), sx1 = floorDivide(x1 - 1, factor) + 1
            var x = try input.store!.read(rows: sy0..<sy1, columns: sx0..<sx1, wrap: circular)
            if let norm {
                x = groupNorm(x, statistics: input.statistics!, weight: norm.weight, bias: norm.bias, eps: norm.eps,
                              activation: .silu)
            }
            if upsample {
                x = x.upsampledNearest(height: 2 * (sy1 - sy0), width: 2 * (sx1 - sx0))
                    .cropped(rows: (y0 - 2 * sy0)..<(y1 - 2 * sy0), columns: (x0 - 2 * sx0)..<(x1 - 2 * sx0))
            }
            var y = conv2d(x, weight: conv.weight, bias: conv.bias, stride: s, padding: tilePadding,
                           winograd: conv.winograd)
            precondition(y.shape == [1, cout, rows.count, columns.count], "tiled conv: \(y.shape) for \(rows) x \(columns)")
            if let residual {
                let r = try residual.store!.read(rows: rows, columns: columns)
                y += shortcut.map { $0(r) } ?? r
            }
            return y
        }
    }

    /// `attention(norm(x)) + x` over the whole map, or over windows when it has more positions
    /// than `tiling.attentionTokenLimit`.
    func attend(_ input: TiledMap, norm: GroupNorm, _ attention: Attention) throws -> TiledMap {
        let (c, h, w) = (input.channels, input.height, input.width)
        let limit = tiling.attentionTokenLimit
        let (rowSplit, columnSplit) = h * w <= limit ? (1, 1) : windowGrid(height: h, width: w, limit: limit)
        let windows = (0..<rowSplit).flatMap { i in
            (0..<columnSplit).map { j in
                TileRect(rows: (i * h / rowSplit)..<((i + 1) * h / rowSplit), columns: (j * w / columnSplit)..<((j + 1) * w / columnSplit))
            }
        }
        return try layer(input: input, residual: nil, overlays: false, channels: c, height: h, width: w, tiles: windows,
                         inputRows: { $0 }) { window in
            let x = try input.store!.read(rows: window.rows, columns: window.columns)
            let n = groupNorm(x, statistics: input.statistics!, weight: norm.weight, bias: norm.bias, eps: norm.eps)
            return attention(n.nchwToTokens()).tokensToNCHW(height: window.rows.count, width: window.columns.count) + x
        }
    }

    // MARK: - Several processes

    /// The processes sharing the work, when there are several.
    private var processes: (any ProcessGroup)? { tiling.processes.flatMap { $0.size > 1 ? $0 : nil } }

    /// `layer` in a job of several processes: each computes a contiguous share of the rows of
    /// tiles (tiles are in row-major order, so a share is a range of them), after receiving the
    /// input and residual rows they read; then every tile's statistics are merged in tile order.
    private func sharedLayer(_ group: any ProcessGroup, input: TiledMap, residual: TiledMap?, overlays: Bool,
                             channels: Int, height: Int, width: Int, tiles: [TileRect],
                             inputRows: (Range<Int>) -> Range<Int>, _ compute: (TileRect) throws -> Tensor) throws -> TiledMap {
        // rows of tiles: (first tile, rows)
        var bands: [(first: Int, rows: Range<Int>)] = []
        for (t, tile) in tiles.enumerated() where bands.last?.rows != tile.rows { bands.append((t, tile.rows)) }
        let bounds = bands.map(\.rows.count).balancedShares(group.size)
        let owners = (0..<group.size).map { r in
            bounds[r] == bounds[r + 1] ? height..<height : bands[bounds[r]].rows.lowerBound..<bands[bounds[r + 1] - 1].rows.upperBound
        }
        try receive(input, rows: owners.map { $0.isEmpty ? 0..<0 : inputRows($0) })
        if let residual { try receive(residual, rows: owners) }
        let output = TiledMap(channels: channels, height: height, width: width, producer: 0, store: nil)
        if overlays {
            output.store = residual!.store!.overlay(channels: channels)
            output.overlaying(residual!)
        } else {
            output.store = try newStore(channels: channels, height: height, width: width, producer: -1)
        }
        output.tiles = tiles
        let first = bounds[group.rank] < bands.count ? bands[bounds[group.rank]].first : tiles.count
        let last = bounds[group.rank + 1] < bands.count ? bands[bounds[group.rank + 1]].first : tiles.count
        var mine: [UInt8] = []
        for t in first..<last {
            let y = try compute(tiles[t])
            if var tile = newStatistics(channels: channels) {
                tile.accumulate(y)
                mine += tile.bytes
            }
            try output.store!.write(y, row: tiles[t].rows.lowerBound, column: tiles[t].columns.lowerBound)
        }
        output.written = tiles.count
        output.owners = owners
        // every tile's sums, merged in tile order as one process accumulates them
        if var statistics = newStatistics(channels: channels) {
            let size = GroupStatistics(groups: groups).bytes.count
            for bytes in group.allGather(mine) {
                precondition(bytes.count % size == 0, "tile statistics of \(bytes.count) bytes")
                for start in stride(from: 0, to: bytes.count, by: size) {
                    statistics.merge(GroupStatistics(groups: groups, bytes: Array(bytes[start..<(start + size)]))!)
                }
            }
            output.statistics = statistics
        }
        return output
    }

    /// Gives every rank the rows `rows[rank]` of `map` that other ranks computed, in slices of
    /// about one tile's floats so the messages stay within the pass's memory bound.
    private func receive(_ map: TiledMap, rows: [Range<Int>]) throws {
        guard let group = processes, let owners = map.owners, let store = map.store else { return }
        let me = group.rank
        let slice = max(1, tiling.tileElements / max(1, store.channels * store.width))
        // what rank `from` sends to rank `to`, the same on every rank
        func part(_ from: Int, _ to: Int) -> Range<Int> { owners[from].clamped(to: rows[to].clamped(to: 0..<store.height)) }
        let rounds = (0..<group.size).flatMap { from in (0..<group.size).filter { $0 != from }.map { part(from, $0).count } }
            .map { ($0 + slice - 1) / slice }.max() ?? 0
        for round in 0..<rounds {
            func piece(_ from: Int, _ to: Int) -> Range<Int> {
                let all = part(from, to)
                let start = min(all.upperBound, all.lowerBound + round * slice)
                return start..<min(all.upperBound, start + slice)
            }
            var outgoing = [[UInt8]](repeating: [], count: group.size)
            for to in 0..<group.size where to != me && !piece(me, to).isEmpty {
                outgoing[to] = try store.read(rows: piece(me, to), columns: 0..<store.width).bytes
            }
            let incoming = group.exchange(outgoing)
            for from in 0..<group.size where from != me && !piece(from, me).isEmpty {
                let rows = piece(from, me)
                // the bytes came from this program in another process
                guard let t = Tensor(shape: [1, store.channels, rows.count, store.width], bytes: incoming[from]) else {
                    preconditionFailure("rank \(from) sent \(incoming[from].count) bytes for rows \(rows)")
                }
                try store.write(t, row: rows.lowerBound, column: 0)
            }
        }
    }

    /// The whole map as a tensor, in every process.
    func whole(_ map: TiledMap) throws -> Tensor {
        if let group = processes {
            try receive(map, rows: Array(repeating: 0..<map.height, count: group.size))
        }
        return try map.store!.tensor()
    }

    /// The fewest near-square windows of at most `limit` positions covering a map.
    private func windowGrid(height h: Int, width w: Int, limit: Int) -> (Int, Int) {
        let side = max(1, Int(Double(limit).squareRoot()))
        var rows = (h + side - 1) / side, columns = (w + side - 1) / side
        while ((h + rows - 1) / rows) * ((w + columns - 1) / columns) > limit {
            if (h + rows - 1) / rows >= (w + columns - 1) / columns { rows += 1 } else { columns += 1 }
        }
        return (rows, columns)
    }
}

private func floorDivide(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }
