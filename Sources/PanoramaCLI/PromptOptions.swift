import ArgumentParser
import Foundation
import Renderer
import Tokenization

extension GenerationOptions {
    /// --emphasis, checked; without it a PNG's `Emphasis: none` (from --from-png), else A1111's.
    func emphasisMode(png: RecalledSettings? = nil) throws -> PromptEmphasis {
        let recalled = png?.emphasis.flatMap { PromptEmphasis(rawValue: $0.lowercased()) }
        let name = emphasis ?? recalled?.rawValue ?? "a1111"
        guard let mode = PromptEmphasis(rawValue: name.lowercased()) else {
            throw ValidationError("unknown --emphasis \"\(name)\"; available: a1111, none")
        }
        return mode
    }

    /// Where embeddings are looked up: --embeddings-dir, or an `embeddings` folder beside the model
    /// (next to its folder or file) and then the project's `models/embeddings`.
    func embeddingDirectories(model: URL) throws -> [URL] {
        try promptEmbeddingDirectories(explicit: embeddingsDir, model: model)
    }
}

/// --embeddings-dir (which must exist), or the default folders that exist (see `GenerationOptions`).
func promptEmbeddingDirectories(explicit: String?, model: URL?) throws -> [URL] {
    if let explicit {
        let url = URL(fileURLWithPath: (explicit as NSString).expandingTildeInPath)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("--embeddings-dir \(url.path) is not a folder")
        }
        return [url]
    }
    var folders: [URL] = []
    if let model { folders.append(model.standardizedFileURL.deletingLastPathComponent().appendingPathComponent("embeddings")) }
    if let project = Resources.locate("models/embeddings", environment: "PANORAMA_EMBEDDINGS") { folders.append(project) }
    return folders
}
