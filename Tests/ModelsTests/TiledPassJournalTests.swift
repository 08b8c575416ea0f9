import Foundation
import Models
import Tensors
import XCTest

/// A journaled tiled VAE pass stopped after any tile (or in the middle of writing a tile over its
/// residual) and resumed from its directory returns the bits of a pass that never stopped.
final class TiledPassJournalTests: XCTestCase {
    private struct Stop: Error {}
    private var directory: URL!
    private var vae: AutoencoderKL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString)")
        vae = try StableDiffusionModel(folder: Fixtures.model("tiny-sd1")).vae
    }

    override func tearDown() { try? FileManager.default.removeItem(at: directory) }

    private var latents: Tensor {
        var g = TorchGenerator(seed: 21)
        return g.randn([1, 4, 13, 22]) * 0.8
    }

    private var image: Tensor {
        var g = TorchGenerator(seed: 22)
        return g.rand([1, 3, 104, 168]) * 2 - 1
    }

    private func pass(_ encoding: Bool, _ x: Tensor, _ tiling: VAETiling, _ journal: TiledPassJournal?) throws -> Tensor {
        encoding ? try vae.encode(x, tiling: tiling, journal: journal).mean : try vae.decode(x, tiling: tiling, journal: journal)
    }

    /// A journal whose hook throws at the `n`th event that `matches`.
    private func journal(interval: TimeInterval, stopAt n: Int = 0, _ matches: @escaping (TiledPassJournal.Event) -> Bool = { _ in false },
                         notes: ((String) -> Void)? = nil) -> TiledPassJournal {
        let journal = TiledPassJournal(directory: directory, checkpointInterval: interval, note: notes ?? { _ in })
        if interval == 0 { journal.copyTimeShare = 1 }  // a checkpoint after every tile
        var seen = 0
        journal.hook = { event in
            guard matches(event) else { return }
            seen += 1
            if seen == n { throw Stop() }
        }
        return journal
    }

    private static func isTile(_ e: TiledPassJournal.Event) -> Bool { if case .tileWritten = e { return true } else { return false } }
    private static func isTorn(_ e: TiledPassJournal.Event) -> Bool { if case .tornWrite = e { return true } else { return false } }
    private static func isRedo(_ e: TiledPassJournal.Event) -> Bool { if case .redoWritten = e { return true } else { return false } }

    /// Events of kind `matches` in a whole journaled pass.
    private func count(_ encoding: Bool, _ x: Tensor, _ tiling: VAETiling, _ matches: @escaping (TiledPassJournal.Event) -> Bool) throws -> Int {
        var n = 0
        let j = TiledPassJournal(directory: directory, checkpointInterval: 0)
        j.hook = { if matches($0) { n += 1 } }
        _ = try pass(encoding, x, tiling, j)
        j.remove()
        return n
    }

    /// Stops a pass at each of `stops` (events counted from its start, one stop per run), resumes
    /// it, and checks the result against `reference` bit for bit. Returns the resumed positions.
    @discardableResult
    private func assertResumes(_ encoding: Bool, _ x: Tensor, _ tiling: VAETiling, interval: TimeInterval, stops: [Int],
                               _ matches: @escaping (TiledPassJournal.Event) -> Bool, reference: Tensor, _ what: String,
                               file: StaticString = #filePath, line: UInt = #line) throws -> [TiledPassJournal.Position?] {
        var positions: [TiledPassJournal.Position?] = []
        for n in stops {
            // the first run stops; a second run resumes and stops again 3 events later; the third finishes
            XCTAssertThrowsError(try pass(encoding, x, tiling, journal(interval: interval, stopAt: n, matches)), what, file: file, line: line)
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("record.json").path),
                          "\(what): a record after stop \(n)", file: file, line: line)
            let again = journal(interval: interval, stopAt: 3, matches, notes: { print("note: \($0)") })
            _ = try? pass(encoding, x, tiling, again)
            let last = journal(interval: interval)
            let resumed = try pass(encoding, x, tiling, last)
            positions.append(again.resumedAt)
            XCTAssertNotNil(again.resumedAt, "\(what): stop \(n) resumed", file: file, line: line)
            XCTAssertEqual(resumed.shape, reference.shape, what, file: file, line: line)
            XCTAssertTrue(resumed.data == reference.data, "\(what), stopped at event \(n): max|a-b| \(resumed.maxAbsDifference(reference))",
                          file: file, line: line)
            last.remove()
        }
        return positions
    }

    /// Several stops spread over a pass of `total` events.
    private func spread(_ total: Int, _ k: Int = 5) -> [Int] { (1...k).map { max(1, $0 * total / (k + 1)) } }

    func testDecodeResumesBitIdenticallyInMemoryInFilesAndMixed() throws {
        let z = latents
        // every map in memory, every map in a file, and maps of 48x80 pixels and more in files
        for (limit, format) in [(Int.max, CanvasStore.FileFormat.float32), (0, .float32), (16 * 24 * 40 * 4, .float32), (0, .bfloat16)] {
            let tiling = VAETiling(tileSide: 7, memoryLimit: limit, fileFormat: format)
            let reference = try vae.decode(z, tiling: tiling)
            let total = try count(false, z, tiling, Self.isTile)
            XCTAssertGreaterThan(total, 100, "many tiles")
            let positions = try assertResumes(false, z, tiling, interval: 0, stops: spread(total), Self.isTile, reference: reference,
                                              "decode, memory limit \(limit), \(format)")
            XCTAssertGreaterThan(Set(positions.compactMap { $0?.layer }).count, 2, "resumed in several layers: \(positions)")
            print("decode, memory limit \(limit), \(format): resumed at \(positions.map { $0.map(String.init(describing:)) ?? "-" })")
        }
        // checkpoints of in-memory maps only when due: a pass still resumes (from its last record)
        let tiling = VAETiling(tileSide: 7)
        let total = try count(false, z, tiling, Self.isTile)
        try assertResumes(false, z, tiling, interval: 3600, stops: [total / 2], Self.isTile,
                          reference: try vae.decode(z, tiling: tiling), "decode, in memory, no checkpoint due")
    }

    func testEncodeResumesBitIdenticallyAndKeepsItsResult() throws {
        let x = image
        for limit in [Int.max, 0] {
            let tiling = VAETiling(tileSide: 9, memoryLimit: limit)
            let reference = try vae.encode(x, tiling: tiling).mean
            let total = try count(true, x, tiling, Self.isTile)
            try assertResumes(true, x, tiling, interval: 0, stops: spread(total, 4), Self.isTile, reference: reference,
                              "encode, memory limit \(limit)")
        }
        // a finished encode's result is kept and returned by the next pass of the same identity
        let tiling = VAETiling(tileSide: 9, memoryLimit: 0)
        let first = journal(interval: 0)
        let a = try vae.encode(x, tiling: tiling, journal: first).mean
        let second = journal(interval: 0, stopAt: 1, Self.isTile)
        let b = try vae.encode(x, tiling: tiling, journal: second).mean
        XCTAssertTrue(second.reusedResult)
        XCTAssertTrue(a.data == b.data)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(), ["record.json", "result.bin"])
    }

    /// Over its residual a tile goes to `redo.bin` first: stopped with half of it written (the
    /// residual under that half gone), the resumed pass replays it and matches; without the redo
    /// file it would compute the tile from the destroyed residual and differ.
    func testTileCutShortOverItsResidualIsReplayed() throws {
        let z = latents
        let tiling = VAETiling(tileSide: 7, memoryLimit: 0)
        let reference = try vae.decode(z, tiling: tiling)
        let torn = try count(false, z, tiling, Self.isTorn)
        XCTAssertGreaterThan(torn, 20)
        try assertResumes(false, z, tiling, interval: 0, stops: spread(torn), Self.isTorn, reference: reference, "decode, torn tile")
        try assertResumes(false, z, tiling, interval: 0, stops: spread(torn, 3), Self.isRedo, reference: reference, "decode, redo written")
        // a redo entry cut short (its checksum fails) is not replayed: the map was not touched yet
        XCTAssertThrowsError(try vae.decode(z, tiling: tiling, journal: journal(interval: 0, stopAt: torn / 3, Self.isRedo)))
        let redo = directory.appendingPathComponent("redo.bin")
        var bytes = try Data(contentsOf: redo)
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: redo)
        let replayed = try vae.decode(z, tiling: tiling, journal: journal(interval: 0))
        XCTAssertTrue(replayed.data == reference.data, "a damaged redo entry is computed again")
        // the hazard is real: the same stop without the redo file gives another picture
        XCTAssertThrowsError(try vae.decode(z, tiling: tiling, journal: journal(interval: 0, stopAt: torn / 2, Self.isTorn)))
        try FileManager.default.removeItem(at: directory.appendingPathComponent("redo.bin"))
        let broken = try vae.decode(z, tiling: tiling, journal: journal(interval: 0))
        XCTAssertFalse(broken.data == reference.data, "recomputing a tile over its half-overwritten residual must differ")
        // encode's resnets too
        let x = image
        let encodeReference = try vae.encode(x, tiling: tiling).mean
        try assertResumes(true, x, tiling, interval: 0, stops: spread(try count(true, x, tiling, Self.isTorn), 3), Self.isTorn,
                          reference: encodeReference, "encode, torn tile")
    }

    /// Damaged or foreign records are discarded with a note: the pass starts over and is right.
    func testHostileJournalsAreDiscarded() throws {
        let z = latents
        let tiling = VAETiling(tileSide: 7, memoryLimit: 0)
        let reference = try vae.decode(z, tiling: tiling)
        let total = try count(false, z, tiling, Self.isTile)
        let recordURL = directory.appendingPathComponent("record.json")
        func stopped() throws -> [String: Any] {
            XCTAssertThrowsError(try vae.decode(z, tiling: tiling, journal: journal(interval: 0, stopAt: total / 2, Self.isTile)))
            return try JSONSerialization.jsonObject(with: Data(contentsOf: recordURL)) as! [String: Any]
        }
        func resumedNote(_ what: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
            var notes: [String] = []
            let j = journal(interval: 0, notes: { notes.append($0) })
            let out = try vae.decode(z, tiling: tiling, journal: j)
            XCTAssertTrue(out.data == reference.data, "\(what): the pass is right", file: file, line: line)
            XCTAssertNil(j.resumedAt, "\(what): not resumed", file: file, line: line)
            return notes.joined(separator: "\n")
        }
        func write(_ record: [String: Any]) throws { try JSONSerialization.data(withJSONObject: record).write(to: recordURL) }

        _ = try stopped()
        try Data("{not json".utf8).write(to: recordURL)
        XCTAssertTrue(try resumedNote("garbage").contains("unreadable"))

        var record = try stopped()
        record["layer"] = 10_000
        try write(record)
        XCTAssertTrue(try resumedNote("layer out of range").contains("does not fit"))

        record = try stopped()
        record["tiles"] = (record["tiles"] as! Int) + 1
        record["tile"] = record["tiles"]
        try write(record)
        XCTAssertTrue(try resumedNote("tile count").contains("damaged"))

        record = try stopped()
        var input = record["input"] as! [String: Any]
        input["kind"] = "../../../etc/passwd"
        record["input"] = input
        try write(record)
        XCTAssertTrue(try resumedNote("a path for a kind").contains("damaged"))

        record = try stopped()
        input = record["input"] as! [String: Any]
        input["producer"] = (input["producer"] as! Int) - 1
        record["input"] = input
        try write(record)
        XCTAssertTrue(try resumedNote("another producer").contains("damaged"))

        record = try stopped()
        if var statistics = record["statistics"] as? [String: Any] {
            statistics["count"] = (statistics["count"] as! Int) + 1
            record["statistics"] = statistics
        } else {
            record["statistics"] = ["groups": 1, "count": 1, "sum": ["0"], "sumOfSquares": ["0"]]
        }
        try write(record)
        XCTAssertTrue(try resumedNote("statistics").contains("damaged"))

        // a map file cut short
        record = try stopped()
        input = record["input"] as! [String: Any]
        let mapURL = directory.appendingPathComponent("map\(input["producer"] as! Int).bin")
        let handle = try FileHandle(forWritingTo: mapURL)
        try handle.truncate(atOffset: 100)
        try handle.close()
        XCTAssertTrue(try resumedNote("truncated map").contains("damaged"))

        // another input: the record is of another pass
        _ = try stopped()
        var notes: [String] = []
        let other = z * 0.5
        let out = try vae.decode(other, tiling: tiling, journal: journal(interval: 0, notes: { notes.append($0) }))
        XCTAssertTrue(out.data == (try vae.decode(other, tiling: tiling)).data)
        XCTAssertTrue(notes.joined().contains("another pass"), notes.joined())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [], "a finished decode leaves nothing")
    }

    /// A journaled pass that is never stopped returns the plain pass's bits, checkpointing after
    /// every tile or only when due, with maps in memory or in files. (Its cost is the benchmark
    /// row `vae-decode-journal`'s.)
    func testAnUnstoppedJournaledPassEqualsThePlainOne() throws {
        var g = TorchGenerator(seed: 23)
        let z = g.randn([1, 4, 32, 64])
        for limit in [Int.max, 0] {
            let tiling = VAETiling(memoryLimit: limit)
            let plain = try vae.decode(z, tiling: tiling)
            for interval in [60.0, 0] {
                let j = journal(interval: interval)
                XCTAssertTrue(try vae.decode(z, tiling: tiling, journal: j).data == plain.data, "limit \(limit), interval \(interval)")
                XCTAssertGreaterThan(j.records, 0)
                j.remove()
            }
        }
    }

    /// The journal's files (named maps and float32 copies of in-memory maps) stay within the bound
    /// `temporaryFileBytes(journaled: true)` reports, checkpointing after every tile.
    func testJournalDiskStaysWithinItsBound() throws {
        var g = TorchGenerator(seed: 13)
        let z = g.randn([1, 4, 12, 20])
        let image = g.rand([1, 3, 96, 160]) * 2 - 1
        for limit in [0, 16 * 24 * 40 * 4, Int.max] {
            let tiling = VAETiling(tileSide: 16, memoryLimit: limit)
            for encoding in [false, true] {
                CanvasStore.resetPeakFileBytes()
                let before = CanvasStore.peakFileBytes
                _ = try pass(encoding, encoding ? image : z, tiling, journal(interval: 0))
                let used = CanvasStore.peakFileBytes - before
                let plain = vae.temporaryFileBytes(height: 96, width: 160, tiling: tiling, encoding: encoding)
                let bound = vae.temporaryFileBytes(height: 96, width: 160, tiling: tiling, encoding: encoding, journaled: true)
                print("journal disk, limit \(limit), \(encoding ? "encode" : "decode"): \(used) bytes (bound \(bound), without a journal \(plain))")
                XCTAssertLessThanOrEqual(used, bound, "limit \(limit), encoding \(encoding)")
                XCTAssertGreaterThanOrEqual(bound, plain)
            }
        }
    }
}
