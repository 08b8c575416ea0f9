import Foundation
import Tensors

/// Makes a tiled VAE pass (`AutoencoderKL.decode(_:tiling:journal:)`, `encode(_:tiling:journal:)`)
/// resumable at the granularity of its tiles: a pass killed at any instant continues, in a later
/// process, from its last record, and returns the same bits as a pass that never stopped.
///
/// The pass keeps its file-backed maps as named files in `directory` (not unlinked), and records
/// after its tiles, in `record.json` (written to a temporary file and renamed over it): the layer
/// and the tiles done, the partial GroupNorm sums of the output (Doubles as their bits), the
/// statistics of the layer's input and which files hold the live maps. Maps kept in memory are
/// copied (float32, exactly) into files of the directory only at checkpoints — when a layer's
/// output goes to a file anyway, or every `checkpointInterval` seconds but not more often than
/// keeps the copies under about 5 % of the time. A resnet's second convolution writes over its residual's
/// map: a tile cut short there has destroyed inputs it needs, so such a tile goes to `redo.bin`
/// (with its position and a checksum) before it goes into the map, and a resumed pass replays it
/// instead of computing it.
///
/// Everything read back is checked against the pass (identity, layer and tile counts, every map's
/// producer and shape, file sizes, statistics counts); file names are made here from layer
/// numbers, never read. A record of another pass (other input, VAE or tiling) is discarded with a
/// note; a damaged one too (the pass starts over). A finished pass removes its files; a finished
/// encode keeps its result (`result.bin`) for a later pass of the same identity.
public final class TiledPassJournal: @unchecked Sendable {
    public enum Kind: String, Sendable { case decode, encode }

    /// Where a resumed pass continued: `layer` and `tile` count from 0.
    public struct Position: Sendable, Equatable, CustomStringConvertible {
        public let layer: Int, layers: Int, tile: Int, tiles: Int
        public var description: String {
            "layer \(layer + 1) of \(layers), tile \(min(tile + 1, tiles)) of \(tiles)"
        }
    }

    /// Moments of a pass that tests use to stop it (by throwing from `hook`).
    public enum Event: Sendable, Equatable {
        /// A tile is in its map and, where due, recorded.
        case tileWritten(layer: Int, tile: Int)
        /// A tile over a residual is in `redo.bin`, not yet in its map.
        case redoWritten(layer: Int, tile: Int)
        /// Half of such a tile is in its map: the residual's values under it are gone.
        case tornWrite(layer: Int, tile: Int)
    }

    public let directory: URL
    /// Seconds between copies of the maps kept in memory, at least (and at least 19 times the
    /// last copy's duration); records of layers whose maps are in files follow every tile.
    public var checkpointInterval: TimeInterval
    /// The most of the pass's time that copying in-memory maps may take (checkpoints are spaced
    /// by the last copying one's duration accordingly); 1: no limit beyond `checkpointInterval`.
    public var copyTimeShare = 0.05
    /// The caller's part of the identity (e.g. the model's hash), besides the VAE's own fingerprint.
    public let context: String
    /// Progress notes: a resumed position, a record discarded.
    public var note: (String) -> Void
    /// Called at the moments of `Event`; throwing stops the pass there (for tests).
    public var hook: ((Event) throws -> Void)?

    /// Where the last pass resumed (nil: it started from its first layer, or returned a kept result).
    public private(set) var resumedAt: Position?
    /// Whether the last pass returned a result kept by an earlier one.
    public private(set) var reusedResult = false
    /// Records written by the last pass, their time, and the bytes copied from memory to files.
    public private(set) var records = 0, recordSeconds = 0.0, copiedBytes = 0

    public init(directory: URL, checkpointInterval: TimeInterval = 60, context: String = "",
                note: @escaping (String) -> Void = { _ in }) {
        (self.directory, self.checkpointInterval, self.context, self.note) = (directory, checkpointInterval, context, note)
    }

    /// Deletes the directory and everything in it.
    public func remove() { try? FileManager.default.removeItem(at: directory) }

    // MARK: - The pass's state

    private var kind = Kind.decode
    private var tiling = VAETiling()
    private var groups = 1, layers = 0, layer = -1
    private var identity = FNV1a()
    private var input = Tensor(zeros: [1])
    /// The record a resumed pass continues (until its layer is restored).
    private var resume: JournalRecord?
    /// Files the last record names; released stores' files among them wait in `orphaned`.
    private var pinned: Set<String> = []
    /// Files of released stores that the last record names, with their sizes.
    private var orphaned: [String: Int] = [:]
    /// The size of `redo.bin` (counted in `CanvasStore.peakFileBytes` as the maps are).
    private var redoBytes = 0
    private var lastCheckpoint = Date()
    private var lastCheckpointSeconds = 0.0

    static let format = "panorama-tiled-pass", version = 1

    /// Starts a pass: its identity, and the record or kept result in the directory (used when
    /// the identity matches, else discarded). Returns a kept result, or nil to run the pass.
    func begin(_ kind: Kind, input: Tensor, output: [Int], tiling: VAETiling, groups: Int, layers: Int,
               model: FNV1a) throws -> Tensor? {
        (self.kind, self.input, self.tiling, self.groups, self.layers, layer) = (kind, input, tiling, groups, layers, -1)
        removeOrphans(everything: true)
        dropRedo()
        (resume, pinned, resumedAt, reusedResult, records, recordSeconds, copiedBytes) = (nil, [], nil, false, 0, 0, 0)
        (lastCheckpoint, lastCheckpointSeconds) = (Date(), 0)
        var h = model
        h.add("\(Self.format) \(Self.version) \(kind.rawValue) \(context) groups \(groups) precision \(Compute.precision.rawValue)")
        // the temporary directory only says where unjournaled maps go: not part of the identity
        h.add("tiling \(tiling.tileElements) \(tiling.tileSide ?? 0) \(tiling.memoryLimit) \(tiling.fileFormat.rawValue) "
              + "\(tiling.attentionTokenLimit) \(tiling.circular)")
        for d in input.shape { h.add(UInt64(d)) }
        input.withUnsafeBufferPointer { for x in $0 { h.add(UInt64(x.bitPattern)) } }
        identity = h
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        guard let data = FileManager.default.contents(atPath: path("record.json")) else { return clear() }
        guard data.count < 1 << 20, let record = try? JSONDecoder().decode(JournalRecord.self, from: data),
              record.format == Self.format, record.version == Self.version else {
            note("\(directory.path): the \(kind.rawValue) journal's record is unreadable; starting the \(kind.rawValue) over")
            return clear()
        }
        guard record.identity == identity.hex else {
            note("\(directory.path) holds a journal of another pass (other input, VAE or tiling); starting the \(kind.rawValue) over")
            return clear()
        }
        if let shape = record.result {
            guard shape == output, let result = readResult(shape: shape, checksum: record.resultChecksum) else {
                note("\(directory.path): the kept \(kind.rawValue) result is damaged; starting the \(kind.rawValue) over")
                return clear()
            }
            reusedResult = true
            return result
        }
        guard record.layers == layers, record.layer >= 0, record.layer < layers, record.tiles >= 1,
              record.tile >= 0, record.tile <= record.tiles else {
            note("\(directory.path): the \(kind.rawValue) journal's record does not fit this pass; starting the \(kind.rawValue) over")
            return clear()
        }
        resume = record
        pinned = record.files
        removeFiles { !pinned.contains($0) && $0 != "record.json" && $0 != "redo.bin" }
        return nil
    }

    /// Forgets a record found damaged while restoring (the pass then runs again from its start).
    func discard(_ error: TiledPassJournalError) {
        note("\(error); starting the \(kind.rawValue) over")
        _ = clear()
    }

    /// After the pass: its files go; an encode keeps its (small) result for a later pass.
    func finish(_ result: Tensor) throws {
        (pinned, resume) = ([], nil)
        removeOrphans(everything: true)
        dropRedo()
        removeFiles { _ in true }
        guard kind == .encode else { return }
        var h = FNV1a()
        let data = result.withUnsafeBufferPointer { p -> Data in
            for x in p { h.add(UInt64(x.bitPattern)) }
            return Data(buffer: p)
        }
        try atomicWrite(data, "result.bin")
        var record = JournalRecord(identity: identity.hex, layers: layers, layer: layers, tiles: 1, tile: 0)
        (record.result, record.resultChecksum) = (result.shape, h.hex)
        try atomicWrite(try JSONEncoder().encode(record), "record.json")
    }

    private func clear() -> Tensor? {
        (resume, pinned) = (nil, [])
        removeOrphans(everything: true)
        dropRedo()
        removeFiles { _ in true }
        return nil
    }

    private func dropRedo() {
        CanvasStore.accountKeptFile(-redoBytes)
        redoBytes = 0
    }

    // MARK: - Files

    private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Whether `name` is one of the files a journal makes (only those are ever removed).
    private static func isJournalFile(_ name: String) -> Bool {
        if ["record.json", "redo.bin", "result.bin"].contains(name) || name.hasSuffix(".tmp") { return true }
        for prefix in ["map", "mirror"] where name.hasPrefix(prefix) && name.hasSuffix(".bin") {
            if Int(name.dropFirst(prefix.count).dropLast(4)) != nil { return true }
        }
        return false
    }

    private func removeFiles(where condition: (String) -> Bool) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        where Self.isJournalFile(name) && condition(name) {
            unlink(path(name))
        }
    }

    private func atomicWrite(_ data: Data, _ name: String) throws {
        let temporary = path(name + ".tmp")
        guard FileManager.default.createFile(atPath: temporary, contents: data), rename(temporary, path(name)) == 0 else {
            throw TiledPassJournalError.io("cannot write \(path(name)): \(String(cString: strerror(errno)))")
        }
    }

    /// A map's file: a file-backed map of layer `producer` (`copy`: false) or the float32 copy of
    /// one kept in memory. Released, it is removed unless the last record names it.
    func mapFile(producer: Int, channels: Int, height: Int, width: Int, format: CanvasStore.FileFormat,
                 create: Bool, copy: Bool = false) throws -> CanvasStore {
        let name = (copy ? "mirror" : "map") + "\(producer).bin"
        let store: CanvasStore
        do {
            store = try CanvasStore(channels: channels, height: height, width: width, path: path(name),
                                    fileFormat: copy ? .float32 : format, create: create)
        } catch where !create {
            throw TiledPassJournalError.damaged("\(directory.path): \(error)")
        }
        store.onRelease = { [weak self] in self?.released(name) }
        return store
    }

    private func released(_ name: String) {
        if pinned.contains(name) {
            orphaned[name] = fileSize(name)
            CanvasStore.accountKeptFile(orphaned[name]!)
        } else {
            unlink(path(name))
        }
    }

    private func fileSize(_ name: String) -> Int {
        var info = stat()
        return stat(path(name), &info) == 0 ? Int(info.st_size) : 0
    }

    /// Removes released files the last record no longer names (all with `everything`).
    private func removeOrphans(everything: Bool = false) {
        for (name, size) in orphaned where everything || !pinned.contains(name) {
            unlink(path(name))
            CanvasStore.accountKeptFile(-size)
            orphaned[name] = nil
        }
    }

    // MARK: - Layers

    /// The index of the layer starting now.
    func nextLayer() -> Int {
        layer += 1
        return layer
    }

    /// Whether a resumed pass skips layer `index` (its record is at a later layer).
    func skips(_ index: Int) -> Bool { resume.map { index < $0.layer } ?? false }

    var resumesAfterFirstLayer: Bool { (resume?.layer ?? 0) > 0 }

    /// A checkpoint is due `checkpointInterval` after the last, and not before the last copying
    /// one's duration allows under `copyTimeShare`.
    private var due: Bool {
        let spacing = copyTimeShare >= 1 ? 0 : (1 / max(copyTimeShare, 1e-3) - 1) * lastCheckpointSeconds
        return Date().timeIntervalSince(lastCheckpoint) >= max(checkpointInterval, spacing)
    }

    /// Whether a record can name `map` without copying anything: the pass's input (rebuilt from
    /// the input tensor), a map in a file, or one whose copy is complete.
    private func isSaved(_ map: TiledMap) -> Bool {
        map.producer < 0 || map.isFileBacked(tiling) || (map.isComplete && map.mirror != nil && map.mirrored == map.written)
    }

    /// A layer starts: records its inputs when that copies nothing, when its output goes to a
    /// file (records then follow its tiles, so its in-memory inputs are copied now, once), when
    /// the last record still holds dead maps' files (their disk is released now, as without a
    /// journal), or when a checkpoint is due.
    func starting(layer index: Int, tiles: Int, input: TiledMap, residual: TiledMap?, fileOutput: Bool) throws {
        let free = isSaved(input) && residual.map(isSaved) ?? true
        if free || fileOutput || orphaned.keys.contains(where: { $0.hasPrefix("map") }) || due {
            try checkpoint(layer: index, tile: 0, tiles: tiles, input: input, residual: residual, output: nil, statistics: nil)
        }
    }

    /// Writes tile `tile` of layer `index` (its output `y`) into `output` and records it where
    /// that is cheap or due. Over a residual in a file the tile goes through `redo.bin` first.
    func write(_ y: Tensor, tile: Int, layer index: Int, output: TiledMap, statistics: GroupStatistics?,
               input: TiledMap, residual: TiledMap?) throws {
        let rect = output.tiles[tile], store = output.store!
        if output.isOverlay && store.isFileBacked {
            try writeRedo(y, layer: index, tile: tile, rect: rect)
            try hook?(.redoWritten(layer: index, tile: tile))
            if hook != nil && rect.rows.count > 1 {
                try store.write(y.cropped(rows: 0..<(rect.rows.count / 2), columns: 0..<rect.columns.count),
                                row: rect.rows.lowerBound, column: rect.columns.lowerBound)
                try hook?(.tornWrite(layer: index, tile: tile))
            }
        }
        try store.write(y, row: rect.rows.lowerBound, column: rect.columns.lowerBound)
        output.written = tile + 1
        if (store.isFileBacked && isSaved(input) && residual.map(isSaved) ?? true) || due {
            try checkpoint(layer: index, tile: tile + 1, tiles: output.tiles.count, input: input, residual: residual,
                           output: output, statistics: statistics)
        }
        try hook?(.tileWritten(layer: index, tile: tile))
    }

    /// Copies what a record needs from memory into files, writes the record, and lets go of the
    /// files the previous record named that are no longer needed.
    private func checkpoint(layer index: Int, tile: Int, tiles: Int, input: TiledMap, residual: TiledMap?,
                            output: TiledMap?, statistics: GroupStatistics?) throws {
        // an overlay in memory has destroyed the residual under its tiles: only a copy of the
        // residual completed before it started can stand for it
        if let output, output.isOverlay, !output.store!.isFileBacked, output.written > 0,
           let residual, !(residual.mirror != nil && residual.mirrored == residual.written) { return }
        let (start, copiedBefore) = (Date(), copiedBytes)
        for map in [input, residual, output].compactMap({ $0 }) where map.producer >= 0 && !map.store!.isFileBacked {
            try copy(map)
        }
        var record = JournalRecord(identity: identity.hex, layers: layers, layer: index, tiles: tiles, tile: tile)
        record.input = entry(input)
        record.inputStatistics = input.producer >= 0 ? input.statistics.map(SavedStatistics.init) : nil
        record.residual = residual.map(entry)
        record.output = output.map(entry)
        record.statistics = output == nil ? nil : statistics.map(SavedStatistics.init)
        try atomicWrite(try JSONEncoder().encode(record), "record.json")
        pinned = record.files
        removeOrphans()
        lastCheckpoint = Date()
        let seconds = lastCheckpoint.timeIntervalSince(start)
        // the 5 % rule follows the checkpoints that copied (a bare record takes a millisecond)
        if copiedBytes > copiedBefore { lastCheckpointSeconds = seconds }
        records += 1
        recordSeconds += seconds
    }

    /// Brings the float32 copy of an in-memory map up to the tiles it holds.
    private func copy(_ map: TiledMap) throws {
        if map.mirror == nil {
            map.mirror = try mapFile(producer: map.producer, channels: map.channels, height: map.height, width: map.width,
                                     format: .float32, create: true, copy: true)
            map.mirrored = 0
        }
        for k in map.mirrored..<map.written {
            try Self.copy(map.tiles[k], from: map.store!, to: map.mirror!)
            copiedBytes += map.channels * map.tiles[k].rows.count * map.tiles[k].columns.count * 4
        }
        map.mirrored = map.written
    }

    /// Copies a rectangle between stores in bands of rows (a whole map may be gigabytes).
    private static func copy(_ rect: TileRect, from source: CanvasStore, to destination: CanvasStore) throws {
        let band = max(1, (16 << 20) / max(1, source.channels * rect.columns.count))
        for y in stride(from: rect.rows.lowerBound, to: rect.rows.upperBound, by: band) {
            let rows = y..<min(rect.rows.upperBound, y + band)
            try destination.write(try source.read(rows: rows, columns: rect.columns), row: y, column: rect.columns.lowerBound)
        }
    }

    /// How a record names a live map: by the layer that wrote it and where it is kept.
    private func entry(_ map: TiledMap) -> MapEntry {
        let kind: String
        if map.producer < 0 { kind = "tensor" }
        else if !map.store!.isFileBacked { kind = "mirror" }
        else { kind = "file" }
        return MapEntry(map, kind: kind)
    }

    /// The entry the pass itself would record for `map` (from its shape, before its store exists).
    private func expectedEntry(_ map: TiledMap) -> MapEntry {
        let kind: String
        if map.producer < 0 { kind = "tensor" }
        else if !map.isFileBacked(tiling) { kind = "mirror" }
        else { kind = "file" }
        return MapEntry(map, kind: kind)
    }

    // MARK: - Resuming

    /// At the record's layer: fills in its input and residual from the files, rebuilds its output
    /// as far as recorded (replaying a tile left in `redo.bin`) and returns it with its partial
    /// statistics and the next tile to compute. nil at any other layer.
    func restore(layer index: Int, input: TiledMap, residual: TiledMap?, overlays: Bool, channels: Int, height: Int,
                 width: Int, tiles: [TileRect], runner: TiledRunner) throws
        -> (output: TiledMap, statistics: GroupStatistics?, next: Int)? {
        guard let r = resume, r.layer == index else { return nil }
        resume = nil
        func damaged(_ why: String) -> TiledPassJournalError {
            .damaged("\(directory.path): the record of layer \(index + 1) \(why)")
        }
        guard r.tiles == tiles.count else { throw damaged("counts \(r.tiles) tiles, the layer has \(tiles.count)") }
        guard let inputEntry = r.input else { throw damaged("names no input") }
        try fill(input, inputEntry, statistics: r.inputStatistics, isInput: true, runner: runner, damaged)
        if let residual {
            guard let e = r.residual else { throw damaged("names no residual") }
            try fill(residual, e, statistics: nil, isInput: false, runner: runner, damaged)
        } else if r.residual != nil { throw damaged("names a residual the layer does not have") }

        let output = TiledMap(channels: channels, height: height, width: width, producer: index, store: nil)
        output.tiles = tiles
        if overlays { output.overlaying(residual!) }
        let expected = expectedEntry(output)
        if let e = r.output, e != expected { throw damaged("names an output \(e), the layer makes \(expected)") }
        if r.output == nil && r.tile > 0 { throw damaged("counts tiles but names no output") }
        if overlays {
            output.store = residual!.store!.overlay(channels: channels)
        } else if r.output != nil && expected.kind == "file" {
            output.store = try mapFile(producer: index, channels: channels, height: height, width: width,
                                       format: tiling.fileFormat, create: false)
        } else {
            output.store = try runner.newStore(channels: channels, height: height, width: width, producer: index)
        }
        if r.output != nil && expected.kind == "mirror" {
            let mirror = try mapFile(producer: index, channels: channels, height: height, width: width, format: .float32,
                                     create: false, copy: true)
            for k in 0..<r.tile { try Self.copy(tiles[k], from: mirror, to: output.store!) }
            (output.mirror, output.mirrored) = (mirror, r.tile)
        }
        output.written = r.tile

        var statistics = runner.newStatistics(channels: channels)
        if statistics == nil || r.output == nil {
            guard r.statistics == nil else { throw damaged("has statistics of an output that has none") }
        } else {
            let area = tiles[0..<r.tile].reduce(0) { $0 + $1.rows.count * $1.columns.count }
            guard let saved = r.statistics?.restored(groups: groups), saved.count == channels / groups * area else {
                throw damaged("has no fitting statistics for its \(r.tile) tiles")
            }
            statistics = saved
        }

        resumedAt = Position(layer: index, layers: layers, tile: r.tile, tiles: tiles.count)
        note("\(kind == .decode ? "decoding" : "encoding"): resumed at \(resumedAt!)")
        var next = r.tile
        // a tile over the residual cut short: its output, saved before, goes in again
        if overlays && expected.kind == "file" && next < tiles.count,
           let y = readRedo(layer: index, tile: next, rect: tiles[next], channels: channels) {
            statistics?.accumulate(y)
            try write(y, tile: next, layer: index, output: output, statistics: statistics, input: input, residual: residual)
            next += 1
        }
        return (output, statistics, next)
    }

    /// Fills in a map of a skipped layer from the file the record names for it (with the saved
    /// statistics of a layer's input, which its GroupNorm reads).
    private func fill(_ map: TiledMap, _ e: MapEntry, statistics saved: SavedStatistics?, isInput: Bool, runner: TiledRunner,
                      _ damaged: (String) -> TiledPassJournalError) throws {
        let expected = expectedEntry(map)
        guard e == expected else { throw damaged("names a map \(e) where the pass has \(expected)") }
        if map.store == nil {
            switch e.kind {
            case "tensor":
                try runner.fill(map, from: input)
            case "file":
                // an overlay's file is its residual's, with the residual's channels
                let base = try mapFile(producer: map.storage, channels: map.storageChannels, height: map.height, width: map.width,
                                       format: tiling.fileFormat, create: false)
                map.store = map.storageChannels == map.channels ? base : base.overlay(channels: map.channels)
            default:
                let mirror = try mapFile(producer: map.producer, channels: map.channels, height: map.height, width: map.width,
                                         format: .float32, create: false, copy: true)
                map.store = try runner.newStore(channels: map.channels, height: map.height, width: map.width, producer: map.producer)
                try Self.copy(TileRect(rows: 0..<map.height, columns: 0..<map.width), from: mirror, to: map.store!)
                (map.mirror, map.mirrored) = (mirror, 1)
            }
            map.tiles = [TileRect(rows: 0..<map.height, columns: 0..<map.width)]
            map.written = 1
        }
        if isInput && e.kind != "tensor" && map.channels % groups == 0 {
            guard let s = saved?.restored(groups: groups), s.count == map.channels / groups * map.height * map.width else {
                throw damaged("has no fitting statistics for its input")
            }
            map.statistics = s
        } else if saved != nil {
            throw damaged("has statistics for a map that needs none")
        }
    }

    // MARK: - The redo file

    private static let redoMagic: UInt64 = 0x4F44_4552_4F4E_4150  // "PANOREDO"

    /// Writes the tile in place (no temporary file: the map is written only after this
    /// returns, so a redo entry cut short, which fails its checksum, leaves the residual intact
    /// and the tile is computed again). The file keeps the largest size it had.
    private func writeRedo(_ y: Tensor, layer index: Int, tile: Int, rect: TileRect) throws {
        let header = y.withUnsafeBufferPointer { p in
            [Self.redoMagic, identity.value, UInt64(index), UInt64(tile), UInt64(y.shape[1]),
             UInt64(rect.rows.lowerBound), UInt64(rect.rows.count), UInt64(rect.columns.lowerBound),
             UInt64(rect.columns.count), Self.checksum(UnsafeRawBufferPointer(p))]
        }
        let fd = open(path("redo.bin"), O_RDWR | O_CREAT, 0o600)
        guard fd >= 0 else { throw TiledPassJournalError.io("cannot write \(path("redo.bin")): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try header.withUnsafeBytes { try Self.write(fd, $0, at: 0) }
        try y.withUnsafeBufferPointer { try Self.write(fd, UnsafeRawBufferPointer($0), at: 80) }
        let size = 80 + 4 * y.count
        if size > redoBytes {
            CanvasStore.accountKeptFile(size - redoBytes)
            redoBytes = size
        }
    }

    private static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw TiledPassJournalError.io("cannot write the redo file: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// FNV-1a over the bytes as 64-bit words (the tail zero-padded).
    private static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h = FNV1a()
        let words = bytes.count / 8
        for k in 0..<words { h.add(bytes.loadUnaligned(fromByteOffset: 8 * k, as: UInt64.self)) }
        var tail: UInt64 = 0
        for k in (8 * words)..<bytes.count { tail |= UInt64(bytes[k]) << (8 * UInt64(k - 8 * words)) }
        h.add(tail)
        return h.value
    }

    /// The tile `redo.bin` holds, when it is this pass's tile `tile` of layer `index`, whole.
    private func readRedo(layer index: Int, tile: Int, rect: TileRect, channels: Int) -> Tensor? {
        let count = channels * rect.rows.count * rect.columns.count
        guard let data = FileManager.default.contents(atPath: path("redo.bin")), data.count >= 80 + 4 * count else { return nil }
        let header = (0..<10).map { k in data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8 * k, as: UInt64.self) } }
        let expected = [Self.redoMagic, identity.value, UInt64(index), UInt64(tile), UInt64(channels),
                        UInt64(rect.rows.lowerBound), UInt64(rect.rows.count), UInt64(rect.columns.lowerBound),
                        UInt64(rect.columns.count)]
        guard Array(header[0..<9]) == expected else { return nil }
        var y = Tensor(zeros: [1, channels, rect.rows.count, rect.columns.count])
        y.withUnsafeMutableBufferPointer { p in
            data.withUnsafeBytes { raw in
                UnsafeMutableRawBufferPointer(p).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[80..<(80 + 4 * count)]))
            }
        }
        let sum = y.withUnsafeBufferPointer { Self.checksum(UnsafeRawBufferPointer($0)) }
        return sum == header[9] ? y : nil
    }

    private func readResult(shape: [Int], checksum: String?) -> Tensor? {
        guard shape.count == 4, shape.allSatisfy({ $0 > 0 && $0 < 1 << 20 }) else { return nil }
        let count = shape.reduce(1, *)
        guard count < 1 << 31, let data = FileManager.default.contents(atPath: path("result.bin")), data.count == 4 * count else { return nil }
        var t = Tensor(zeros: shape)
        var h = FNV1a()
        t.withUnsafeMutableBufferPointer { p in
            data.withUnsafeBytes { raw in
                for i in 0..<count {
                    p[i] = raw.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
                    h.add(UInt64(p[i].bitPattern))
                }
            }
        }
        return h.hex == checksum ? t : nil
    }
}

/// A journal that cannot be used or written.
public enum TiledPassJournalError: Error, CustomStringConvertible {
    case damaged(String), io(String)
    public var description: String {
        switch self {
        case .damaged(let why): return "a damaged VAE journal: \(why)"
        case .io(let why): return why
        }
    }
}

/// What `record.json` holds.
struct JournalRecord: Codable {
    var format = TiledPassJournal.format, version = TiledPassJournal.version
    var identity: String
    var layers: Int, layer: Int, tiles: Int, tile: Int
    var statistics: SavedStatistics?
    var inputStatistics: SavedStatistics?
    var input: MapEntry?, residual: MapEntry?, output: MapEntry?
    /// A finished pass's kept result: its shape and checksum.
    var result: [Int]?
    var resultChecksum: String?

    init(identity: String, layers: Int, layer: Int, tiles: Int, tile: Int) {
        (self.identity, self.layers, self.layer, self.tiles, self.tile) = (identity, layers, layer, tiles, tile)
    }

    /// The files the record needs.
    var files: Set<String> {
        Set([input, residual, output].compactMap { e -> String? in
            guard let e else { return nil }
            switch e.kind {
            case "file": return "map\(e.storage).bin"
            case "mirror": return "mirror\(e.producer).bin"
            default: return nil  // "tensor": rebuilt from the input
            }
        })
    }
}

/// A live map in a record: the layer that wrote it, its shape, the layer whose file holds it
/// (an overlay's is its residual's) with that file's channels, and how it is kept: "file",
/// "mirror" (a float32 copy of a map in memory) or "tensor" (the pass's input, rebuilt).
struct MapEntry: Codable, Equatable, CustomStringConvertible {
    var producer: Int, channels: Int, height: Int, width: Int
    var storage: Int, storageChannels: Int
    var kind: String

    init(_ map: TiledMap, kind: String) {
        (producer, channels, height, width) = (map.producer, map.channels, map.height, map.width)
        (storage, storageChannels, self.kind) = (map.storage, map.storageChannels, kind)
    }

    var description: String { "\(kind) of layer \(producer + 1), \(channels)x\(height)x\(width) in layer \(storage + 1)'s" }
}

/// GroupNorm sums as the bits of their Doubles, so a resumed pass continues them exactly.
struct SavedStatistics: Codable {
    var groups: Int, count: Int
    var sum: [String], sumOfSquares: [String]

    init(_ s: GroupStatistics) {
        (groups, count) = (s.groups, s.count)
        sum = s.sum.map { String($0.bitPattern, radix: 16) }
        sumOfSquares = s.sumOfSquares.map { String($0.bitPattern, radix: 16) }
    }

    func restored(groups expected: Int) -> GroupStatistics? {
        guard groups == expected else { return nil }
        let a = sum.compactMap { UInt64($0, radix: 16).map(Double.init(bitPattern:)) }
        let b = sumOfSquares.compactMap { UInt64($0, radix: 16).map(Double.init(bitPattern:)) }
        return GroupStatistics(groups: groups, sum: a, sumOfSquares: b, count: count)
    }
}

extension FNV1a {
    mutating func add(_ text: String) {
        for byte in text.utf8 { add(UInt64(byte)) }
        add(0xFF)
    }
}
