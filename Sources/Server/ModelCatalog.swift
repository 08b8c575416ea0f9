import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Weights

/// The models the server can load: the default model, then the diffusers folders and
/// `.safetensors` / `.ckpt` single files directly inside `--models-dir`. Requests name a model by
/// its `title` or `model_name`, which are looked up here; a request's string never becomes a path.
public struct ModelCatalog: Sendable {
    public struct Entry: Sendable, Equatable {
        /// A1111's `title`: the file or folder name.
        public let title: String
        /// A1111's `model_name`: the name without extension.
        public let modelName: String
        public let url: URL
        public let isSingleFile: Bool
    }

    public let entries: [Entry]
    private let hashStore: ModelHashes

    /// `hashCache`: where hashes computed before (by the engine loading a model, by the command
    /// line) are found and new ones kept; `eagerHashBytes`: see `hashes(of:)`.
    public init(defaultModel: URL?, modelsDirectory: URL?, hashCache: HashCache? = .shared,
                eagerHashBytes: Int = ModelHashes.defaultEagerBytes) {
        hashStore = ModelHashes(cache: hashCache, eagerBytes: eagerHashBytes)
        var entries: [Entry] = []
        if let defaultModel { entries.append(Self.entry(defaultModel)) }
        if let modelsDirectory,
           let names = try? FileManager.default.contentsOfDirectory(atPath: modelsDirectory.path) {
            for name in names.sorted() where !name.hasPrefix(".") {
                let url = modelsDirectory.appendingPathComponent(name)
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { continue }
                let usable = isDirectory.boolValue
                    ? FileManager.default.fileExists(atPath: url.appendingPathComponent("unet").path)
                    : ["safetensors", "ckpt"].contains(url.pathExtension.lowercased())
                let entry = Self.entry(url)
                if usable, !entries.contains(where: { $0.title == entry.title || $0.url.standardizedFileURL == url.standardizedFileURL }) {
                    entries.append(entry)
                }
            }
        }
        self.entries = entries
    }

    private static func entry(_ url: URL) -> Entry {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        let single = !isDirectory.boolValue
        return Entry(title: url.lastPathComponent, modelName: single ? url.deletingPathExtension().lastPathComponent : url.lastPathComponent,
                     url: url, isSingleFile: single)
    }

    /// A1111's `hash` and `sha256` of `/sdapi/v1/sd-models` for `entry`.
    ///
    /// A single-file checkpoint: `sha256` of the file and `hash`, its first 10 hex digits (A1111's
    /// short hash, the infotexts' `Model hash`). A diffusers folder: `hash` is what
    /// `FileHash.modelHash(ofModelAt:)` gives (its UNet weights file's short hash, the folder's
    /// `Model hash`) and `sha256` is nil, there being no single file it would identify; both nil
    /// for a sharded UNet.
    ///
    /// Listing must stay fast, so a GET never reads a large file: as A1111, which lists a hash
    /// only once it has been computed and cached, a weights file over `eagerHashBytes` (64 MiB:
    /// every real checkpoint) is listed with the hash found in the hash cache (filled when the
    /// model is loaded) and nil until then; a smaller one is hashed on first sight (well under a
    /// second). Hashes found are kept here per file, with its size and modification time, so a
    /// listing costs a stat per model (and a look in the hash cache for a large one not yet
    /// hashed), and a replaced file is hashed again.
    public func hashes(of entry: Entry) -> (hash: String?, sha256: String?) {
        guard let file = Self.weightsFile(of: entry), let sha256 = hashStore.sha256(of: file) else { return (nil, nil) }
        return (String(sha256.prefix(10)), entry.isSingleFile ? sha256 : nil)
    }

    /// The file whose hash is the model's: the checkpoint, or the UNet weights file that
    /// `FileHash.modelHash(ofModelAt:)` hashes.
    static func weightsFile(of entry: Entry) -> URL? {
        if entry.isSingleFile { return entry.url }
        let unet = entry.url.appendingPathComponent("unet")
        return DiffusersFolder.singleFileNames.map { unet.appendingPathComponent($0) }
            .first { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// The entry whose title or model name is `name` (A1111 also accepts "title [hash]").
    public func entry(named name: String) -> Entry? {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        let bare = trimmed.range(of: " [").map { String(trimmed[..<$0.lowerBound]) } ?? trimmed
        return entries.first { $0.title == trimmed || $0.modelName == trimmed }
            ?? entries.first { $0.title == bare || $0.modelName == bare }
    }
}

/// The sha256 of model files found so far, per file with its size and modification time.
public final class ModelHashes: @unchecked Sendable {
    /// Files up to this size are hashed when first listed (64 MiB: at least 200 MB/s through
    /// swift-crypto, so a third of a second at most, once).
    public static let defaultEagerBytes = 64 << 20
    private let cache: HashCache?
    private let eagerBytes: Int
    private let lock = NSLock()
    private var known: [String: (size: Int, modified: Double, sha256: String)] = [:]

    init(cache: HashCache?, eagerBytes: Int) {
        self.cache = cache
        self.eagerBytes = eagerBytes
    }

    /// The file's sha256 if known or cheap to compute, else nil (never an error: a listing
    /// shows a file it cannot read with no hash).
    func sha256(of url: URL) -> String? {
        let path = url.standardizedFileURL.path
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        // the key HashCache uses, to the nanosecond
        let size = Int(st.st_size), modified = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        if let hit = lock.withLock({ known[path] }), hit.size == size, hit.modified == modified { return hit.sha256 }
        let found = size <= eagerBytes
            ? try? FileHash.sha256(of: url, cache: cache)
            : cache?.lookup(path: path, kind: .whole, size: size, modified: modified)
        if let found { lock.withLock { known[path] = (size, modified, found) } }
        return found
    }
}

/// Files of one kind below a folder (LoRAs, embeddings), listed for the API.
enum FileListing {
    static func files(in folder: URL?, extensions: Set<String>) -> [URL] {
        guard let folder, let walker = FileManager.default.enumerator(
            at: folder, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles]) else { return [] }
        var files: [URL] = []
        for case let url as URL in walker {
            if walker.level > 4 { walker.skipDescendants() }
            if extensions.contains(url.pathExtension.lowercased()) { files.append(url) }
        }
        return files.sorted { $0.path < $1.path }
    }
}
