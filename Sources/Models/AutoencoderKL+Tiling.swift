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

extension AutoencoderKL {
    /// `decode(_:)` computed in tiles (see `VAETiling`): the same images, with memory bounded by
    /// the tiles, and with `tiling.circular` an image whose left and right edges join.
    public func decode(_ latents: Tensor, tiling: VAETiling) throws -> Tensor {
        let runner = TiledRunner(tiling: tiling, groups: config.normNumGroups)
        let images = try (0..<latents.shape[0]).map { b in
            try runner.whole(decoderLayers(runner, try runner.map(latents.batch(b))))
        }
        return images.count == 1 ? images[0] : Tensor.concatenate(images, dimension: 0)
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
    /// under `tiling.memoryLimit`.
    public func temporaryFileBytes(height: Int, width: Int, tiling: VAETiling, encoding: Bool) -> Int {
        let planner = DiskPlanner(tiling: tiling)
        let scale = 1 << (config.blockOutChannels.count - 1)
        if encoding {
            guard let encoder else { return 0 }
            _ = try? encoderLayers(planner, encoder, planner.input(channels: config.inChannels, height: height, width: width))
        } else {
            _ = try? decoderLayers(planner, planner.input(channels: config.latentChannels,
                                                          height: height / scale, width: width / scale))
        }
        return planner.peak
    }

    /// `encode(_:)` computed in tiles (see `VAETiling`).
    public func encode(_ images: Tensor, tiling: VAETiling) throws -> (mean: Tensor, std: Tensor) {
        guard let encoder else { throw ModelError.invalidInput(Self.noEncoderMessage) }
        let runner = TiledRunner(tiling: tiling, groups: config.normNumGroups)
        let moments = try (0..<images.shape[0]).map { b in
            try runner.whole(encoderLayers(runner, encoder, try runner.map(images.batch(b))))
        }
        return distribution(moments.count == 1 ? moments[0] : Tensor.concatenate(moments, dimension: 0))
    }
}

/// A map produced by a tiled pass, with the group statistics of its values (nil when its
/// channels do not divide into the groups: images and latents, which no GroupNorm reads).
struct TiledMap {
    let store: CanvasStore
    let statistics: GroupStatistics?
    /// With several processes: the rows of the map each rank computed. Only those rows, and the
    /// rows received since, are valid in this process's store. nil: every row, everywhere.
    var owners: [Range<Int>]? = nil
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

    init(tiling: VAETiling) { self.tiling = tiling }

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
        return output
    }

    func attend(_ input: Map, norm: GroupNorm, _ attention: Attention) throws -> Map {
        peak = max(peak, 2 * fileBytes(input))
        return input
    }
}

/// Runs VAE layers over `TiledMap`s tile by tile.
struct TiledRunner: VAEPass {
    let tiling: VAETiling
    let groups: Int

    private func newStore(channels: Int, height: Int, width: Int) throws -> CanvasStore {
        try CanvasStore(channels: channels, height: height, width: width, memoryLimit: tiling.memoryLimit,
                        directory: tiling.temporaryDirectory, fileFormat: tiling.fileFormat)
    }

    private func newStatistics(channels: Int) -> GroupStatistics? {
        channels % groups == 0 ? GroupStatistics(groups: groups) : nil
    }

    /// The processes sharing the work, when there are several.
    private var processes: (any ProcessGroup)? { tiling.processes.flatMap { $0.size > 1 ? $0 : nil } }

    func map(_ tensor: Tensor) throws -> TiledMap {
        let store = try newStore(channels: tensor.shape[1], height: tensor.shape[2], width: tensor.shape[3])
        try store.write(tensor, row: 0, column: 0)
        var statistics = newStatistics(channels: tensor.shape[1])
        statistics?.accumulate(tensor)
        return TiledMap(store: store, statistics: statistics)
    }

    /// `conv(silu(norm(x)))`, optionally on the 2x nearest upsampling of the input, plus
    /// `shortcut(residual)` (or `residual`) — every convolution of the VAE has this form. With
    /// `consumingResidual` the output is written over the residual's map (see `CanvasStore.overlay`),
    /// which the caller must not use afterwards.
    func convolve(_ input: TiledMap, norm: GroupNorm?, _ conv: Conv2D, upsample: Bool,
                  residual: TiledMap?, shortcut: Conv2D?, consumingResidual: Bool) throws -> TiledMap {
        let source = input.store
        let (cin, cout, k) = (source.channels, conv.weight.shape[0], conv.weight.shape[2])
        let (s, pad, circular) = (conv.stride, conv.padding, tiling.circular)
        let factor = upsample ? 2 : 1
        let (hc, wc) = (source.height * factor, source.width * factor)  // the convolution's input
        let hout = (hc + pad.top + pad.bottom - k) / s + 1
        let wout = circular ? (wc + s - 1) / s : (wc + pad.left + pad.right - k) / s + 1
        let moments = norm.map { _ in input.statistics! }
        // Sides of whole 32-pixel panels let the bf16 convolution skip its im2col buffer, and
        // of 64 pixels fill the Winograd transforms' 16-tile vectors.
        let fitting = Int(Double(tiling.tileElements / max(cin, cout)).squareRoot())
        let side = tiling.tileSide ?? (fitting >= 128 ? fitting / 64 * 64 : fitting >= 64 ? fitting / 32 * 32 : max(8, fitting))
        let output: CanvasStore
        if consumingResidual, let r = residual?.store, r.channels >= cout, r.height == hout, r.width == wout {
            output = r.overlay(channels: cout)
        } else {
            output = try newStore(channels: cout, height: hout, width: wout)
        }
        let tileRows = stride(from: 0, to: hout, by: side).map { $0..<min(hout, $0 + side) }
        // With several processes each computes a share of the rows of tiles, after receiving
        // the input rows (and residual rows) its tiles read that others computed.
        let share = try divide(tileRows, height: hout) { rows in
            let top = rows.lowerBound * s - pad.top, bottom = (rows.upperBound - 1) * s - pad.top + k
            let y0 = max(top, 0), y1 = min(bottom, hc)
            return floorDivide(y0, factor)..<(floorDivide(y1 - 1, factor) + 1)
        } inputs: { needs, outputRows in
            try receive(input, rows: needs)
            if let residual { try receive(residual, rows: outputRows) }
        }
        var statistics = newStatistics(channels: cout)
        var tileStatistics: [GroupStatistics] = []

        for rows in tileRows[share.tiles] {
            for ox in stride(from: 0, to: wout, by: side) {
                let columns = ox..<min(wout, ox + side)
                // The convolution input this tile needs, and the part of it outside the map,
                // which the convolution pads with zeros (or, wrapping, reads from the other side).
                let top = rows.lowerBound * s - pad.top, bottom = (rows.upperBound - 1) * s - pad.top + k
                let left = columns.lowerBound * s - pad.left, right = (columns.upperBound - 1) * s - pad.left + k
                let y0 = max(top, 0), y1 = min(bottom, hc)
                let x0 = circular ? left : max(left, 0), x1 = circular ? right : min(right, wc)
                let tilePadding = Padding2D(top: y0 - top, bottom: bottom - y1, left: x0 - left, right: right - x1)

                let sy0 = floorDivide(y0, factor), sy1 = floorDivide(y1 - 1, factor) + 1
                let sx0 = floorDivide(x0, factor), sx1 = floorDivide(x1 - 1, factor) + 1
                var x = try source.read(rows: sy0..<sy1, columns: sx0..<sx1, wrap: circular)
                if let norm, let moments {
                    x = groupNorm(x, statistics: moments, weight: norm.weight, bias: norm.bias, eps: norm.eps,
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
                    let r = try residual.store.read(rows: rows, columns: columns)
                    y += shortcut.map { $0(r) } ?? r
                }
                accumulate(y, into: &statistics, tiles: &tileStatistics, channels: cout)
                try output.write(y, row: rows.lowerBound, column: columns.lowerBound)
            }
        }
        merge(tileStatistics, into: &statistics)
        return TiledMap(store: output, statistics: statistics, owners: share.owners)
    }

    /// `attention(norm(x)) + x` over the whole map, or over windows when it has more positions
    /// than `tiling.attentionTokenLimit`.
    func attend(_ input: TiledMap, norm: GroupNorm, _ attention: Attention) throws -> TiledMap {
        let source = input.store
        let (c, h, w) = (source.channels, source.height, source.width)
        let output = try newStore(channels: c, height: h, width: w)
        var statistics = newStatistics(channels: c)
        let limit = tiling.attentionTokenLimit
        let (rowSplit, columnSplit) = h * w <= limit ? (1, 1) : windowGrid(height: h, width: w, limit: limit)
        let windowRows = (0..<rowSplit).map { i in (i * h / rowSplit)..<((i + 1) * h / rowSplit) }
        let share = try divide(windowRows, height: h) { $0 } inputs: { needs, _ in try receive(input, rows: needs) }
        var tileStatistics: [GroupStatistics] = []
        for rows in windowRows[share.tiles] {
            for j in 0..<columnSplit {
                let columns = (j * w / columnSplit)..<((j + 1) * w / columnSplit)
                let x = try source.read(rows: rows, columns: columns)
                let n = groupNorm(x, statistics: input.statistics!, weight: norm.weight, bias: norm.bias, eps: norm.eps)
                let y = attention(n.nchwToTokens()).tokensToNCHW(height: rows.count, width: columns.count) + x
                accumulate(y, into: &statistics, tiles: &tileStatistics, channels: c)
                try output.write(y, row: rows.lowerBound, column: columns.lowerBound)
            }
        }
        merge(tileStatistics, into: &statistics)
        return TiledMap(store: output, statistics: statistics, owners: share.owners)
    }

    // MARK: - Several processes

    /// This process's rows of tiles (indices into `tileRows`) and every rank's output rows; alone,
    /// every row of tiles and no owners. `inputRows` maps output rows to the input rows they read;
    /// `inputs` then receives, for every rank's output rows, the rows it reads.
    private func divide(_ tileRows: [Range<Int>], height: Int, inputRows: (Range<Int>) -> Range<Int>,
                        inputs: (_ needs: [Range<Int>], _ outputRows: [Range<Int>]) throws -> Void)
        throws -> (tiles: Range<Int>, owners: [Range<Int>]?) {
        guard let group = processes else { return (tileRows.indices, nil) }
        let bounds = tileRows.map(\.count).balancedShares(group.size)
        let owners = (0..<group.size).map { r in
            bounds[r] == bounds[r + 1] ? height..<height : tileRows[bounds[r]].lowerBound..<tileRows[bounds[r + 1] - 1].upperBound
        }
        try inputs(owners.map { $0.isEmpty ? 0..<0 : inputRows($0) }, owners)
        return (bounds[group.rank]..<bounds[group.rank + 1], owners)
    }

    /// Gives every rank the rows `rows[rank]` of `map` that other ranks computed, in slices of
    /// about one tile's floats so the messages stay within the pass's memory bound.
    private func receive(_ map: TiledMap, rows: [Range<Int>]) throws {
        guard let group = processes, let owners = map.owners else { return }
        let store = map.store, me = group.rank
        let slice = max(1, tiling.tileElements / max(1, store.channels * store.width))
        // what rank `from` sends to rank `to`, in the same order everywhere
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
                guard let t = Tensor(shape: [1, store.channels, rows.count, store.width], bytes: incoming[from]) else {
                    preconditionFailure("rank \(from) sent \(incoming[from].count) bytes for rows \(rows)")
                }
                try store.write(t, row: rows.lowerBound, column: 0)
            }
        }
    }

    /// A tile's sums: into the map's statistics at once, or, with several processes, kept per
    /// tile to be merged in tile order after the layer.
    private func accumulate(_ y: Tensor, into statistics: inout GroupStatistics?, tiles: inout [GroupStatistics],
                            channels: Int) {
        guard statistics != nil else { return }
        guard processes != nil else { statistics!.accumulate(y); return }
        var tile = GroupStatistics(groups: groups)
        tile.accumulate(y)
        tiles.append(tile)
    }

    /// Every rank's tile sums, merged in tile order (ranks hold consecutive rows of tiles).
    private func merge(_ tiles: [GroupStatistics], into statistics: inout GroupStatistics?) {
        guard let group = processes, statistics != nil else { return }
        let size = 8 * (1 + 2 * groups)
        for bytes in group.allGather(tiles.flatMap(\.bytes)) {
            precondition(bytes.count % size == 0, "tile statistics of \(bytes.count) bytes")
            for start in stride(from: 0, to: bytes.count, by: size) {
                statistics!.merge(GroupStatistics(groups: groups, bytes: Array(bytes[start..<(start + size)]))!)
            }
        }
    }

    /// The whole map as a tensor, on every process.
    func whole(_ map: TiledMap) throws -> Tensor {
        if let group = processes {
            try receive(map, rows: Array(repeating: 0..<map.store.height, count: group.size))
        }
        return try map.store.tensor()
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
