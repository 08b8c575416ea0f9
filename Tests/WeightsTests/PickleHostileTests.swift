import Foundation
import Tensors
import Weights
import XCTest

/// Malformed and hostile PyTorch files, built by hand here (a stored zip around a pickle written
/// opcode by opcode) or damaged from the fixtures: each must give a thrown `WeightsError`, never a
/// crash, a hang or a huge allocation.
final class PickleHostileTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = try makeTemporaryDirectory(self)
    }

    private func write(_ bytes: [UInt8], _ name: String = "model.pt") throws -> URL {
        try writeBytes(bytes, to: dir.appendingPathComponent(name))
    }

    /// Opens `bytes` as a file and reads every tensor; returns the error if any.
    @discardableResult
    private func load(_ bytes: [UInt8]) throws -> Error? {
        // Plain POSIX writes: Foundation's Data.write is several times slower, which the fuzz test feels.
        let url = dir.appendingPathComponent("model.pt")
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { throw CocoaError(.fileWriteUnknown) }
        do {
            let file = try SafeTensorsFile.open(url)
            for name in file.names { _ = try file.tensor(name) }
            return nil
        } catch {
            return error
        }
    }

    private func assertRefused(_ bytes: [UInt8], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let url = try write(bytes)
        assertThrowsMessage(try SafeTensorsFile.open(url), contains: fragments, file: file, line: line)
    }

    // MARK: - Builders

    /// A zip of stored entries (CRCs left 0: the reader does not check them); `flags` for every entry.
    static func storedZip(_ entries: [(String, [UInt8])], flags: Int = 0) -> [UInt8] {
        var out: [UInt8] = [], central: [UInt8] = []
        func le(_ v: Int, _ n: Int, _ a: inout [UInt8]) { for i in 0..<n { a.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        for (name, data) in entries {
            let n = Array(name.utf8), offset = out.count
            for (v, w) in [(0x0403_4b50, 4), (20, 2), (flags, 2), (0, 2), (0, 2), (0, 2), (0, 4), (data.count, 4),
                           (data.count, 4), (n.count, 2), (0, 2)] { le(v, w, &out) }
            out += n + data
            for (v, w) in [(0x0201_4b50, 4), (20, 2), (20, 2), (flags, 2), (0, 2), (0, 2), (0, 2), (0, 4), (data.count, 4),
                           (data.count, 4), (n.count, 2), (0, 2), (0, 2), (0, 2), (0, 2), (0, 4), (offset, 4)] { le(v, w, &central) }
            central += n
        }
        let directoryOffset = out.count
        out += central
        for (v, w) in [(0x0605_4b50, 4), (0, 2), (0, 2), (entries.count, 2), (entries.count, 2), (central.count, 4),
                       (directoryOffset, 4), (0, 2)] { le(v, w, &out) }
        return out
    }

    /// Pickle opcodes written one by one (protocol 2).
    struct Pickle {
        var bytes: [UInt8] = [0x80, 0x02]
        mutating func op(_ b: UInt8...) { bytes += b }
        mutating func le32(_ v: Int) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        mutating func string(_ s: String) { op(0x58); le32(s.utf8.count); bytes += Array(s.utf8) }
        mutating func global(_ module: String, _ name: String) { op(0x63); bytes += Array("\(module)\n\(name)\n".utf8) }
        /// BININT, or LONG1 with 8 bytes for values beyond 32 bits.
        mutating func int(_ v: Int) {
            if let small = Int32(exactly: v) { op(0x4A); le32(Int(small)); return }
            op(0x8A, 8)
            for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
        }
        mutating func ints(_ values: [Int]) { op(0x28); values.forEach { int($0) }; op(0x74) }

        /// `_rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, shape, stride, False, OrderedDict())`
        mutating func tensor(type: String = "FloatStorage", key: String = "0", numel: Int, offset: Int = 0,
                             shape: [Int], stride: [Int]) {
            global("torch._utils", "_rebuild_tensor_v2")
            op(0x28)
            op(0x28); string("storage"); global("torch", type); string(key); string("cpu"); int(numel); op(0x74)
            op(0x51)
            int(offset); ints(shape); ints(stride); op(0x89)
            global("collections", "OrderedDict"); op(0x29, 0x52)
            op(0x74, 0x52)
        }
    }

    /// `{'t': tensor}` over one float storage holding `values`.
    static func tensorPickle(numel: Int, offset: Int = 0, shape: [Int], stride: [Int]) -> [UInt8] {
        var p = Pickle()
        p.op(0x7D); p.string("t"); p.tensor(numel: numel, offset: offset, shape: shape, stride: stride); p.op(0x73, 0x2E)
        return p.bytes
    }

    static func floats(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }

    static func torchZip(_ pickle: [UInt8], storages: [(String, [UInt8])] = [], byteorder: String? = "little",
                         flags: Int = 0) -> [UInt8] {
        storedZip([("archive/data.pkl", pickle)] + storages.map { ("archive/data/\($0.0)", $0.1) }
                  + (byteorder.map { [("archive/byteorder", Array($0.utf8))] } ?? []), flags: flags)
    }

    /// A pickle of plain opcodes after the protocol header, ending in STOP.
    static func raw(_ body: [UInt8]) -> [UInt8] { torchZip([0x80, 0x02] + body + [0x2E]) }

    // MARK: - The builders themselves

    func testHandBuiltFileLoads() throws {
        let url = try write(Self.torchZip(Self.tensorPickle(numel: 6, offset: 1, shape: [2, 2], stride: [1, 2]),
                                          storages: [("0", Self.floats([0, 1, 2, 3, 4, 5]))]))
        let file = try SafeTensorsFile.open(url)
        XCTAssertEqual(file.names, ["t"])
        XCTAssertEqual(try file.tensor("t").data, [1, 3, 2, 4], "offset 1, column-major 2x2 gathered row-major")
    }

    // MARK: - Tensors that do not fit their storage

    func testStorageSmallerThanTheTensor() throws {
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 4, shape: [5], stride: [1]), storages: [("0", Self.floats([1, 2, 3, 4]))]),
                          ["reaches element 4 of storage 0, which holds 4 F32 elements"])
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 6, offset: 1, shape: [2, 3], stride: [3, 1]),
                                        storages: [("0", Self.floats([0, 1, 2, 3, 4, 5]))]),
                          ["reaches element 6 of storage 0"])
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 6, shape: [2, 3], stride: [4, 1]),
                                        storages: [("0", Self.floats([0, 1, 2, 3, 4, 5]))]),
                          ["stride [4, 1]", "reaches element 6"])
        // Sizes whose product overflows, and a negative size.
        let big = Int(Int32.max)
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 1, shape: [big, big, big], stride: [0, 0, 0]),
                                        storages: [("0", Self.floats([1]))]), ["whose size overflows"])
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 1, shape: [-1], stride: [1]), storages: [("0", Self.floats([1]))]),
                          ["not non-negative integers"])
        // An expansion bomb: one element viewed 2^40 times; and 100,000 dimensions.
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 1, shape: [1 << 20, 1 << 20], stride: [0, 0]),
                                        storages: [("0", Self.floats([1]))]), ["1099511627776 elements over storage 0 of 1 elements"])
        XCTAssertNil(try load(Self.torchZip(Self.tensorPickle(numel: 1, shape: [4, 1000], stride: [0, 0]),
                                            storages: [("0", Self.floats([7]))])), "a modest expanded view loads")
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 1, shape: Array(repeating: 1, count: 100_000),
                                                          stride: Array(repeating: 0, count: 100_000)),
                                        storages: [("0", Self.floats([1]))]), ["100000 dimensions"])
    }

    func testStorageEntryOfTheWrongSize() throws {
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 6, shape: [6], stride: [1]), storages: [("0", Self.floats([1, 2]))]),
                          ["declares storage 0 as 6 elements of torch.FloatStorage (24 bytes)", "holds 8 bytes"])
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 1 << 62, shape: [1], stride: [1]), storages: [("0", Self.floats([1]))]),
                          ["too many"])
        try assertRefused(Self.torchZip(Self.tensorPickle(numel: 1, shape: [1], stride: [1])),
                          ["refers to storage 0, but the archive has no archive/data/0"])
    }

    // MARK: - Truncation and bad offsets

    func testEveryTruncationOfAPickleThrows() throws {
        let pickle = Self.tensorPickle(numel: 2, shape: [2], stride: [1])
        for cut in 0..<pickle.count {
            let error = try load(Self.torchZip(Array(pickle[..<cut]), storages: [("0", Self.floats([1, 2]))]))
            XCTAssertNotNil(error as? WeightsError, "cut at \(cut)")
        }
    }

    func testTruncatedArchivesThrow() throws {
        let bytes = try [UInt8](Data(contentsOf: PickleLoadingTests.fixture("tensors.pt")))
        for cut in stride(from: 0, to: bytes.count, by: 37) {
            XCTAssertNotNil(try load(Array(bytes[..<cut])) as? WeightsError, "cut at \(cut)")
        }
    }

    func testOffsetsPastTheEnd() throws {
        let good = Self.torchZip(Self.tensorPickle(numel: 2, shape: [2], stride: [1]), storages: [("0", Self.floats([1, 2]))])
        XCTAssertNil(try load(good))
        func patched(_ at: Int, _ value: UInt32) -> [UInt8] {
            var b = good
            for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
            return b
        }
        let end = good.count - 22
        let directory = Int(good[end + 16]) | Int(good[end + 17]) << 8
        // The directory's offset, its size, an entry's header offset, an entry's size.
        try assertRefused(patched(end + 16, 0x7FFF_FFF0), ["central directory", "past the end of the file"])
        try assertRefused(patched(end + 12, 0x7FFF_FFF0), ["central directory", "past the end of the file"])
        try assertRefused(patched(directory + 42, 0x7FFF_FFF0), ["points at offset 2147483632, where there is no local header"])
        var sized = patched(directory + 20, 0x7FFF_FFF0)
        for i in 0..<4 { sized[directory + 24 + i] = sized[directory + 20 + i] }
        try assertRefused(sized, ["lies past the end of the file"])
        // A count of entries the directory cannot hold; a ZIP64 marker without its record.
        var counted = good
        counted[end + 10] = 0xFE; counted[end + 11] = 0xFF
        try assertRefused(counted, ["claims 65534 entries"])
        try assertRefused(patched(end + 16, 0xFFFF_FFFF), ["no ZIP64 locator"])
        // No end record at all.
        try assertRefused(Array(good.dropLast(22)) + Array(repeating: 0, count: 22), ["end-of-directory record is missing"])
    }

    func testHugeDeclaredLengths() throws {
        try assertRefused(Self.raw([0x58, 0xF0, 0xFF, 0xFF, 0xFF]), ["declares 4294967280 bytes but only"])  // BINUNICODE
        try assertRefused(Self.raw([0x8E] + Array(repeating: 0xFF, count: 7) + [0x3F]), ["declares", "bytes but only"])  // BINBYTES8
        try assertRefused(Self.raw([0x8B, 0xFF, 0xFF, 0xFF, 0x7F]), ["declares 2147483647 bytes"])  // LONG4
        try assertRefused(Self.raw([0x95] + Array(repeating: 0xFF, count: 8)), ["declares"])  // FRAME
        try assertRefused(Self.raw([0x63] + Array(repeating: 0x41, count: 5000)), ["not terminated by a newline"])  // GLOBAL
    }

    // MARK: - Structure bombs

    func testNestingBombs() throws {
        // 100,000 nested 1-tuples, 100,000 MARKs, 999 nested lists and tuples built with MARKs.
        try assertRefused(Self.raw([0x4E] + Array(repeating: 0x85, count: 100_000)), ["nests tuples deeper than 200"])
        try assertRefused(Self.raw(Array(repeating: 0x28, count: 100_000)), ["nests MARKs deeper than 1000"])
        try assertRefused(Self.raw(Array(repeating: 0x28, count: 999) + [0x5D] + Array(repeating: 0x6C, count: 999)),
                          ["nests its containers deeper than 100 levels"])
        try assertRefused(Self.raw(Array(repeating: 0x28, count: 999) + [0x4E] + Array(repeating: 0x74, count: 999)),
                          ["nests tuples deeper than 200"])
        // A list that contains itself, and a dict inside itself.
        try assertRefused(Self.raw([0x5D, 0x71, 0x00, 0x68, 0x00, 0x61]), ["contains itself"])
        try assertRefused(Self.raw([0x7D, 0x71, 0x00, 0x58, 1, 0, 0, 0, 0x6B, 0x68, 0x00, 0x73]), ["contains itself"])
        // A lattice of lists, each holding the one below twice: 2^60 paths through 60 boxes.
        var lattice: [UInt8] = [0x5D, 0x71, 0x00]
        for i in 1...60 { lattice += [0x5D, 0x68, UInt8(i - 1), 0x61, 0x68, UInt8(i - 1), 0x61, 0x71, UInt8(i)] }
        try assertRefused(Self.raw(lattice), ["over 1000000 times"])
        // A chain of 200,000 lists, each inside the next (built through the memo, popped from the
        // stack): refused by depth, and freed without recursing 200,000 deep.
        var chain: [UInt8] = [0x5D, 0x71, 0x00, 0x30]
        for _ in 0..<200_000 { chain += [0x5D, 0x68, 0x00, 0x61, 0x71, 0x00, 0x30] }
        try assertRefused(Self.raw(chain + [0x68, 0x00]), ["nests its containers deeper than 100 levels"])
        // Millions of lists created and dropped at once.
        try assertRefused(Self.raw(Array(repeating: [0x5D, 0x30], count: 5_000_000).flatMap { $0 }),
                          ["creates more than 4194304 lists, dicts and objects"])
        // A 3,000-byte key reused at every level of a 10-deep dict makes a 30 kB name.
        var long = Pickle()
        long.string(String(repeating: "k", count: 3000)); long.op(0x71, 0x00, 0x30)
        for _ in 0..<10 { long.op(0x7D, 0x68, 0x00) }
        long.op(0x4E)
        for _ in 0..<10 { long.op(0x73) }
        long.op(0x2E)
        try assertRefused(Self.torchZip(long.bytes), ["key path longer than 4096 bytes"])
    }

    func testStackAndMemoMisuse() throws {
        try assertRefused(Self.raw([0x68, 0x05]), ["refers to memo entry 5, which was never stored"])
        try assertRefused(Self.raw([0x6A, 0xFF, 0xFF, 0xFF, 0xFF]), ["memo entry 4294967295"])
        try assertRefused(Self.raw([0x30]), ["needs a MARK that is not there"])  // POP on empty
        try assertRefused(Self.raw([0x61]), ["pops an empty stack"])  // APPEND
        try assertRefused(Self.raw([0x4E, 0x4E, 0x61]), ["APPENDs to None, not a list"])
        try assertRefused(Self.raw([0x28, 0x4E, 0x86]), ["builds a 2-tuple from fewer than 2 items"])  // below a MARK
        try assertRefused(Self.raw([0x74]), ["needs a MARK"])
        try assertRefused(Self.raw([0x4E, 0x4E, 0x52]), ["calls None with None as arguments"])
        try assertRefused(Self.torchZip([0x80, 0x02, 0x4E]), ["is cut short"])  // no STOP
    }

    func testOpcodesOutsideTheSubsetAreNamed() throws {
        try assertRefused(Self.raw([0xFF]), ["uses the opcode 0xFF (unknown)", "at byte 2"])
        try assertRefused(Self.raw([0x69] + Array("os\nsystem\n".utf8)), ["uses the opcode INST (0x69)"])
        try assertRefused(Self.raw([0x82, 0x01]), ["uses the opcode EXT1 (0x82)"])
        try assertRefused(Self.raw(Array("I1\n".utf8)), ["uses the opcode INT (0x49)"])
        try assertRefused(Self.torchZip([0x80, 0x06, 0x4E, 0x2E]), ["uses pickle protocol 6"])
    }

    func testGlobalsOutsideTheAllowListAreRefusedByName() throws {
        for (module, name) in [("torch", "load"), ("collections", "defaultdict"), ("torch._utils", "_rebuild_qtensor"),
                               ("builtins", "getattr"), ("numpy.core.multiarray", "scalars"), ("torch.nn.modules.container", "Sequential")] {
            var p = Pickle()
            p.global(module, name)
            p.op(0x2E)
            let url = try write(Self.torchZip(p.bytes))
            XCTAssertThrowsError(try SafeTensorsFile.open(url)) {
                XCTAssertEqual($0 as? WeightsError, .forbiddenGlobal(path: url.path, global: "\(module).\(name)"))
            }
        }
        // STACK_GLOBAL spells the same names from strings.
        var p = Pickle()
        p.op(0x8C, 5); p.bytes += Array("posix".utf8); p.op(0x8C, 6); p.bytes += Array("system".utf8); p.op(0x93, 0x2E)
        try assertRefused(Self.torchZip(p.bytes), ["refuses the global posix.system"])
        // Allowed names used in ways tensor files never do.
        var q = Pickle()
        q.global("torch", "FloatStorage"); q.op(0x29, 0x52, 0x2E)
        try assertRefused(Self.torchZip(q.bytes), ["constructs torch.FloatStorage directly"])
        var r = Pickle()
        r.global("torch", "complex64"); r.op(0x2E)
        XCTAssertNil(try load(Self.torchZip(r.bytes)), "a dtype named alone is harmless")
        var s = Pickle()
        s.op(0x7D); s.string("t"); s.tensor(type: "ComplexFloatStorage", numel: 1, shape: [1], stride: [1]); s.op(0x73, 0x2E)
        try assertRefused(Self.torchZip(s.bytes, storages: [("0", Self.floats([1, 2]))]), ["torch.ComplexFloatStorage, which is not supported"])
    }

    // MARK: - Archive-level refusals

    func testArchiveRefusals() throws {
        let pickle = Self.tensorPickle(numel: 2, shape: [2], stride: [1])
        try assertRefused(Self.torchZip(pickle, storages: [("0", Self.floats([1, 2]))], flags: 1), ["is encrypted"])
        try assertRefused(Self.torchZip(pickle, storages: [("0", Self.floats([1, 2]))], byteorder: "big"),
                          ["\"big\" byte order; only little-endian"])
        XCTAssertNil(try load(Self.torchZip(pickle, storages: [("0", Self.floats([1, 2]))], byteorder: nil)),
                     "files from before torch wrote byteorder are little-endian")
        try assertRefused(Self.storedZip([("archive/version", [0x33])]), ["without a data.pkl"])
        try assertRefused(Self.storedZip([("a/data.pkl", [0x80, 0x02, 0x4E, 0x2E]), ("b/data.pkl", [0x80, 0x02, 0x4E, 0x2E])]),
                          ["2 data.pkl entries"])
        try assertRefused(Self.storedZip([("a/data.pkl", [0x80, 0x02, 0x4E, 0x2E]), ("a/data.pkl", [0x80, 0x02, 0x4E, 0x2E])]),
                          ["appears twice"])
        try assertRefused([0x80, 0x02, 0x4E, 0x2E, 0, 0, 0, 0], ["bare pickle"])
    }

    func testNamesThatCollideAfterFlattening() throws {
        var p = Pickle()
        p.op(0x7D, 0x28)
        p.string("a.b"); p.tensor(numel: 2, shape: [2], stride: [1])
        p.string("a"); p.op(0x7D); p.string("b"); p.tensor(numel: 2, shape: [2], stride: [1]); p.op(0x73)
        p.op(0x75, 0x2E)
        // {'a.b': t, 'a': {'b': t}}: SETITEM fills the inner dict, SETITEMS the outer.
        try assertRefused(Self.torchZip(p.bytes, storages: [("0", Self.floats([1, 2]))]), ["tensor \"a.b\" appears twice"])
    }

    // MARK: - Mutation fuzzing

    /// A few thousand damaged variants of valid files (bytes flipped, fields set to extremes, cut,
    /// spliced, and bytes flipped inside the pickle only): each opens and reads, or throws.
    /// `PANORAMA_FUZZ_ITERATIONS` and `PANORAMA_FUZZ_SEED` run a longer campaign locally.
    func testMutatedFilesThrowOrLoadNeverCrash() throws {
        let seeds = try ["tensors.pt", "tensors-p4.pt", "tensors-zip64.pt", "embedding-paramdict.pt", "tiny-pano-vae.pt"].map {
            try [UInt8](Data(contentsOf: PickleLoadingTests.fixture($0)))
        }.map { $0.count > 20_000 ? Array($0[..<4096]) + Array($0.suffix(4096)) : $0 } + [
            Self.torchZip(Self.tensorPickle(numel: 6, offset: 1, shape: [2, 2], stride: [1, 2]), storages: [("0", Self.floats([0, 1, 2, 3, 4, 5]))]),
        ]
        let environment = ProcessInfo.processInfo.environment
        let iterations = environment["PANORAMA_FUZZ_ITERATIONS"].flatMap { Int($0) } ?? 3000
        var rng = SplitMix(seed: environment["PANORAMA_FUZZ_SEED"].flatMap { UInt64($0) } ?? 21)
        var loaded = 0, refused = 0
        let start = Date()
        for i in 0..<iterations {
            var b = seeds[i % seeds.count]
            // Where the pickle lies: torch writes data.pkl first, after its local header.
            let pickleStart = 30 + Int(b[26]) + Int(b[27]) << 8 + Int(b[28]) + Int(b[29]) << 8
            switch rng.next(6) {
            case 0:
                for _ in 0...rng.next(4) { b[rng.next(b.count)] ^= UInt8(1 << rng.next(8)) }
            case 1:
                let at = rng.next(b.count - 4)
                let value: [UInt8] = [[0xFF, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0xFF, 0xFF, 0, 0], [0, 0, 0, 0x80]][rng.next(4)]
                b.replaceSubrange(at..<(at + 4), with: value)
            case 2:
                b = Array(b[..<rng.next(b.count)])
            case 3:
                let other = seeds[rng.next(seeds.count)]
                let from = rng.next(other.count), count = rng.next(min(200, other.count - from) + 1)
                let at = rng.next(b.count)
                b.replaceSubrange(at..<min(b.count, at + rng.next(200)), with: other[from..<(from + count)])
            default:
                guard pickleStart < b.count else { continue }
                let end = min(b.count, pickleStart + 400)
                for _ in 0...rng.next(3) { b[pickleStart + rng.next(end - pickleStart)] = UInt8(rng.next(256)) }
            }
            if let error = try load(b) {
                XCTAssertTrue(error is WeightsError, "variant \(i): \(type(of: error)) \(error)")
                refused += 1
            } else {
                loaded += 1
            }
        }
        XCTAssertGreaterThan(refused, iterations / 3, "the mutations reach the checks")
        XCTAssertGreaterThan(loaded, iterations / 30, "harmless mutations still load")
        print("mutation fuzz: \(loaded) loaded, \(refused) refused in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }
}

/// A small deterministic generator for the fuzz test.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<n (n > 0).
    mutating func next(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
}

extension Array where Element == UInt8 {
    /// The first occurrence of `pattern` replaced.
    func replacing(_ pattern: [UInt8], with replacement: [UInt8]) -> [UInt8] {
        guard let i = indices.first(where: { self[$0...].starts(with: pattern) }) else { return self }
        return Array(self[..<i]) + replacement + Array(self[(i + pattern.count)...])
    }
}
