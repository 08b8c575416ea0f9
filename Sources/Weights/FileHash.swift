import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The file hashes AUTOMATIC1111 writes into PNG parameters: `Model hash` (sha256 of the whole
/// checkpoint, first 10 hex digits), `Lora hashes` (its "addnet" hash: for a `.safetensors` file
/// the sha256 of the bytes after the 8-byte length and the JSON header, so editing the metadata
/// keeps the hash; first 12 hex digits) and `TI hashes` (sha256 of the whole file, first 12).
///
/// Files are read in 8 MiB blocks through swift-crypto's SHA-256 (BoringSSL's assembly, SHA-NI
/// where the CPU has it), so a 2–7 GB checkpoint costs seconds at most, and only once: results go
/// to a `HashCache` keyed by path, size and modification time, as A1111 caches them.
public enum FileHash {
    /// What part of a file is hashed.
    public enum Kind: String, Sendable {
        /// Every byte of the file.
        case whole = "sha256"
        /// A1111's LoRA hash: for `.safetensors`, the bytes after the header; otherwise the whole file.
        case addnet = "addnet"
    }

    /// The lowercase hex sha256 of `kind`'s bytes of the file at `url`, from `cache` when the file's
    /// size and modification time are those recorded (pass nil to always read the file).
    public static func sha256(of url: URL, kind: Kind = .whole, cache: HashCache? = .shared) throws -> String {
        let path = url.standardizedFileURL.path
        let info = try fileInfo(path)
        if let cached = cache?.lookup(path: path, kind: kind, size: info.size, modified: info.modified) {
            return cached
        }
        let start = kind == .addnet && url.pathExtension.lowercased() == "safetensors"
            ? try safetensorsDataOffset(path, size: info.size) : 0
        let digest = try hashFile(path, from: start, size: info.size)
        cache?.store(path: path, kind: kind, size: info.size, modified: info.modified, sha256: digest)
        return digest
    }

    /// `Model hash`: the first 10 hex digits of the checkpoint file's sha256.
    public static func modelHash(of url: URL, cache: HashCache? = .shared) throws -> String {
        String(try sha256(of: url, cache: cache).prefix(10))
    }

    /// A LoRA's short hash in `Lora hashes`: the first 12 hex digits of its addnet hash.
    public static func loraShortHash(of url: URL, cache: HashCache? = .shared) throws -> String {
        String(try sha256(of: url, kind: .addnet, cache: cache).prefix(12))
    }

    /// An embedding's short hash in `TI hashes`: the first 12 hex digits of the whole file's sha256.
    public static func embeddingShortHash(of url: URL, cache: HashCache? = .shared) throws -> String {
        String(try sha256(of: url, cache: cache).prefix(12))
    }

    static func fileInfo(_ path: String) throws -> (size: Int, modified: Double) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw WeightsError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw WeightsError.unreadable(path: path, reason: "not a regular file")
        }
        return (Int(st.st_size), Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
    }

    /// Where a safetensors file's data starts: 8 + the header length, checked against the file size.
    private static func safetensorsDataOffset(_ path: String, size: Int) throws -> Int {
        guard size >= 8 else {
            throw WeightsError.corruptFile(path: path, problem: "the file is \(size) bytes long, too short for a safetensors file (at least 8 bytes)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw WeightsError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8)
        let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 8, 0) }
        guard got == 8 else { throw WeightsError.unreadable(path: path, reason: "cannot read the header length") }
        let length = bytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard length <= UInt64(size - 8) else {
            throw WeightsError.corruptFile(path: path, problem: "the header length \(length) runs past the end of the \(size)-byte file")
        }
        return 8 + Int(length)
    }

    /// sha256 of the bytes of `path` from `start` to the end (`size` bytes in all, as stat saw it).
    private static func hashFile(_ path: String, from start: Int, size: Int) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw WeightsError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        #if os(Linux)
        _ = posix_fadvise(fd, off_t(start), 0, POSIX_FADV_SEQUENTIAL)
        #endif
        let blockSize = 8 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { buffer.deallocate() }
        var hasher = SHA256()
        var offset = start
        while true {
            let got = pread(fd, buffer.baseAddress, blockSize, off_t(offset))
            if got < 0 {
                if errno == EINTR { continue }
                throw WeightsError.unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if got == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            offset += got
        }
        guard offset == size else {
            throw WeightsError.unreadable(path: path, reason: "the file changed size while it was hashed (\(size) bytes, then \(offset))")
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// This program's files in the user's cache folder (hashes, fitted previews): optimisations
/// only, written so that concurrent runs never read half a file.
public enum UserCache {
    /// `$XDG_CACHE_HOME/panorama`, or `~/.cache/panorama`.
    public static let folder: URL = {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return base.appendingPathComponent("panorama")
    }()

    /// Writes `data` to `url` (creating its folder) under a temporary name renamed over it; the
    /// last writer wins. Failures are ignored: a cache that cannot be written is only slower.
    public static func write(_ data: Data, to url: URL) {
        let folder = url.deletingLastPathComponent()
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).\(getpid()).partial")
        guard (try? data.write(to: temporary)) != nil else { return }
        if rename(temporary.path, url.path) != 0 { try? FileManager.default.removeItem(at: temporary) }
    }
}

/// Hashes already computed, in a JSON file (by default `$XDG_CACHE_HOME/panorama/hashes.json` or
/// `~/.cache/panorama/hashes.json`), keyed by absolute path and hash kind and valid while the
/// file's size and modification time are unchanged. The cache is an optimisation only: a missing,
/// unreadable or corrupt cache file is treated as empty and failures to write it are ignored.
public final class HashCache: @unchecked Sendable {
    /// The cache file.
    public let url: URL
    private let lock = NSLock()

    private struct Entry: Codable {
        var size: Int
        var mtime: Double
        var sha256: String
    }

    /// The cache in the user's cache folder.
    public static let shared = HashCache(url: UserCache.folder.appendingPathComponent("hashes.json"))

    /// A cache kept in the file `url` (created with its folder on the first store).
    public init(url: URL) {
        self.url = url
    }

    /// The hash recorded for `path`, if the file still has this size and modification time.
    public func lookup(path: String, kind: FileHash.Kind, size: Int, modified: Double) -> String? {
        lock.lock()
        defer { lock.unlock() }
        guard let entry = load()["\(kind.rawValue):\(path)"], entry.size == size, entry.mtime == modified,
              entry.sha256.count == 64, entry.sha256.allSatisfy(\.isHexDigit) else { return nil }
        return entry.sha256
    }

    /// Records a hash; the file is rewritten under a temporary name and renamed, so concurrent
    /// runs never see half a file (the last writer wins).
    public func store(path: String, kind: FileHash.Kind, size: Int, modified: Double, sha256: String) {
        lock.lock()
        defer { lock.unlock() }
        var entries = load()
        entries["\(kind.rawValue):\(path)"] = Entry(size: size, mtime: modified, sha256: sha256)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        guard let data = try? encoder.encode(entries) else { return }
        UserCache.write(data, to: url)
    }

    private func load() -> [String: Entry] {
        // A cache far larger than any real one is not read (and is replaced on the next store).
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
              let size = attributes[.size] as? Int, size < 64 << 20,
              let data = try? Data(contentsOf: url),
              let entries = try? JSONDecoder().decode([String: Entry].self, from: data) else { return [:] }
        return entries
    }
}

extension FileHash {
    /// `Model hash` of the model at `url`: for a single-file checkpoint, the file's; for a
    /// diffusers folder, its UNet weights file's (`unet/diffusion_pytorch_model.safetensors`, or
    /// the variant the loader reads), which is what sets one fine-tune apart from another. Nil
    /// for a folder whose UNet is sharded or missing.
    public static func modelHash(ofModelAt url: URL, cache: HashCache? = .shared) throws -> String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return nil }
        guard isDirectory.boolValue else { return try modelHash(of: url, cache: cache) }
        let unet = url.appendingPathComponent("unet")
        guard let file = DiffusersFolder.singleFileNames.map({ unet.appendingPathComponent($0) })
            .first(where: { FileManager.default.fileExists(atPath: $0.path) }) else { return nil }
        return try modelHash(of: file, cache: cache)
    }
}
