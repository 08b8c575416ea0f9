import Foundation
import Weights
import XCTest

/// File hashes against Python's hashlib (tools/reference/make_infotext_fixtures.py), the hash
/// cache, and the speed of hashing a large file.
final class FileHashTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("hash-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    private struct Expected: Decodable { let file: String; let sha256: String; let addnet: String }

    func testHashesMatchHashlib() throws {
        let data = try Data(contentsOf: Self.root.appendingPathComponent("Tests/Fixtures/infotext/hashes.json"))
        let expected = try JSONDecoder().decode([Expected].self, from: data)
        XCTAssertEqual(expected.count, 6)
        for e in expected {
            let url = Self.root.appendingPathComponent(e.file)
            XCTAssertEqual(try FileHash.sha256(of: url, cache: nil), e.sha256, e.file)
            XCTAssertEqual(try FileHash.sha256(of: url, kind: .addnet, cache: nil), e.addnet, e.file)
            XCTAssertEqual(try FileHash.modelHash(of: url, cache: nil), String(e.sha256.prefix(10)))
            XCTAssertEqual(try FileHash.loraShortHash(of: url, cache: nil), String(e.addnet.prefix(12)))
            XCTAssertEqual(try FileHash.embeddingShortHash(of: url, cache: nil), String(e.sha256.prefix(12)))
        }
        // same tensors, different metadata: the addnet hash ignores the header, the file hash does not
        XCTAssertEqual(expected[0].addnet, expected[1].addnet)
        XCTAssertNotEqual(expected[0].sha256, expected[1].sha256)
        // a diffusers folder's Model hash is its UNet weights file's
        let folderModel = Self.root.appendingPathComponent("Tests/Fixtures/models/tiny-pano")
        XCTAssertEqual(try FileHash.modelHash(ofModelAt: folderModel, cache: nil), String(expected[2].sha256.prefix(10)))
    }

    func testBadFiles() throws {
        XCTAssertThrowsError(try FileHash.sha256(of: folder.appendingPathComponent("missing"), cache: nil))
        XCTAssertThrowsError(try FileHash.sha256(of: folder, cache: nil)) { XCTAssertTrue("\($0)".contains("not a regular file")) }
        let lying = folder.appendingPathComponent("lying.safetensors")
        try Data([0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 1, 2]).write(to: lying)
        XCTAssertThrowsError(try FileHash.sha256(of: lying, kind: .addnet, cache: nil)) {
            XCTAssertTrue("\($0)".contains("past the end"), "\($0)")
        }
        let short = folder.appendingPathComponent("short.safetensors")
        try Data([1, 2]).write(to: short)
        XCTAssertThrowsError(try FileHash.sha256(of: short, kind: .addnet, cache: nil))
        XCTAssertEqual(try FileHash.sha256(of: short, cache: nil), "a12871fee210fb8619291eaea194581cbd2531e4b23759d225f6806923f63222")
    }

    func testCacheIsUsedWhileTheFileIsUnchanged() throws {
        let cache = HashCache(url: folder.appendingPathComponent("cache/hashes.json"))
        let file = folder.appendingPathComponent("f.bin")
        try Data("hello".utf8).write(to: file)
        let first = try FileHash.sha256(of: file, cache: cache)
        XCTAssertEqual(first, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        XCTAssertTrue(FileManager.default.fileExists(atPath: cache.url.path))
        // a cached value is returned without reading the file: plant a different one to see it used
        let info = try FileManager.default.attributesOfItem(atPath: file.path)
        let modified = (info[.modificationDate] as! Date).timeIntervalSince1970
        let planted = String(repeating: "ab", count: 32)
        let key = file.standardizedFileURL.path
        var st = stat()
        XCTAssertEqual(stat(file.path, &st), 0)
        let exact = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        XCTAssertEqual(modified, exact, accuracy: 1e-3)
        XCTAssertEqual(HashCache(url: cache.url).lookup(path: key, kind: .whole, size: 5, modified: exact), first,
                       "the first hash was stored and reads back from the file")
        XCTAssertNil(HashCache(url: cache.url).lookup(path: key, kind: .whole, size: 5, modified: exact + 1))
        cache.store(path: key, kind: .whole, size: 5, modified: exact, sha256: planted)
        XCTAssertEqual(try FileHash.sha256(of: file, cache: cache), planted)
        // a changed file is hashed again
        try Data("hello!".utf8).write(to: file)
        XCTAssertEqual(try FileHash.sha256(of: file, cache: cache), "ce06092fb948d9ffac7d1a376e404b26b7575bcc11ee05a4615fef4fec3a308b")
        // the kinds are kept apart
        XCTAssertEqual(try FileHash.sha256(of: file, kind: .addnet, cache: cache), "ce06092fb948d9ffac7d1a376e404b26b7575bcc11ee05a4615fef4fec3a308b")
    }

    func testCorruptOrUnwritableCacheIsIgnored() throws {
        let file = folder.appendingPathComponent("f.bin")
        try Data("hello".utf8).write(to: file)
        let corrupt = folder.appendingPathComponent("corrupt.json")
        try Data("{not json".utf8).write(to: corrupt)
        XCTAssertEqual(try FileHash.sha256(of: file, cache: HashCache(url: corrupt)),
                       "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        let wrongShape = folder.appendingPathComponent("wrong.json")
        try Data(#"{"sha256:\#(file.path)": {"size": 5, "mtime": 0, "sha256": "zz"}}"#.utf8).write(to: wrongShape)
        XCTAssertEqual(try FileHash.sha256(of: file, cache: HashCache(url: wrongShape)),
                       "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        // a cache under a regular file cannot be written: hashing still works
        let blocked = HashCache(url: file.appendingPathComponent("sub/hashes.json"))
        XCTAssertEqual(try FileHash.sha256(of: file, cache: blocked),
                       "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    }

    /// Hashing speed on a 256 MiB file (printed; a checkpoint of 2–4 GB must cost seconds, not
    /// minutes, the first time). The bound is loose: the machine may be shared.
    func testHashSpeed() throws {
        let file = folder.appendingPathComponent("big.bin")
        let block = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        FileManager.default.createFile(atPath: file.path, contents: nil)
        let handle = try FileHandle(forWritingTo: file)
        for _ in 0..<256 { handle.write(block) }
        try handle.close()
        let start = Date()
        _ = try FileHash.sha256(of: file, cache: nil)
        let seconds = Date().timeIntervalSince(start)
        let rate = 256 / seconds
        print(String(format: "sha256 of 256 MiB: %.2f s, %.0f MB/s", seconds, rate * 1.048576))
        XCTAssertGreaterThan(rate, 100, "hashing at \(rate) MiB/s")
    }
}
