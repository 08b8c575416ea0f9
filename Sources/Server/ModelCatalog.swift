import Foundation

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

    public init(defaultModel: URL?, modelsDirectory: URL?) {
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

    /// The entry whose title or model name is `name` (A1111 also accepts "title [hash]").
    public func entry(named name: String) -> Entry? {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        let bare = trimmed.range(of: " [").map { String(trimmed[..<$0.lowerBound]) } ?? trimmed
        return entries.first { $0.title == trimmed || $0.modelName == trimmed }
            ?? entries.first { $0.title == bare || $0.modelName == bare }
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
