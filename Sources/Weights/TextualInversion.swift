import Foundation
import Tensors

/// A textual-inversion embedding: `count` vectors of the text encoder's width that take the place of
/// their name's tokens in a prompt.
///
/// Reads the formats people bring, from a safetensors file (or, through the pickle reader, a PyTorch
/// file whose nested dicts appear with dotted names):
/// - AUTOMATIC1111: `string_to_param` → `*` ([n, d]; `.pt` files), or one tensor such as `emb_params`;
/// - diffusers `learned_embeds.safetensors`: one tensor named after its token, [d] or [n, d].
///
/// The name is the file's stem, as A1111 names embeddings (for diffusers files too, whose token key is
/// ignored). SDXL embeddings (`clip_l` + `clip_g`) are refused by name.
public struct TextualInversionEmbedding: Sendable {
    /// The file's stem: the word that calls the embedding in a prompt.
    public let name: String
    /// The file it was read from.
    public let url: URL
    /// Row-major [count, width] float32 values.
    public let vectors: [Float]
    /// Number of vectors (token slots it takes in a prompt).
    public let count: Int
    /// Width of each vector: the text encoder's hidden size it was trained for.
    public let width: Int
    /// The tensor the vectors came from.
    public let tensorName: String

    /// Loads and validates `url` (see the type's documentation).
    public init(url: URL) throws {
        let file = try SafeTensorsFile.open(url)
        let path = url.path
        let floats = file.names.filter { file.info($0)?.dtype.isFloatingPoint == true }
        let chosen: String
        let a1111 = floats.filter { $0.hasPrefix("string_to_param.") }
        if a1111.count == 1 {
            chosen = a1111[0]
        } else if a1111.count > 1 {
            throw EmbeddingError.ambiguous(path: path, tensors: a1111)
        } else if floats.contains("clip_g") || floats.contains("clip_l") {
            throw EmbeddingError.sdxl(path: path)
        } else if floats.count == 1 {
            chosen = floats[0]
        } else if floats.isEmpty {
            throw EmbeddingError.noVectors(path: path, tensors: file.names)
        } else {
            throw EmbeddingError.ambiguous(path: path, tensors: floats)
        }
        guard let info = file.info(chosen) else { throw EmbeddingError.noVectors(path: path, tensors: file.names) }
        let (n, d): (Int, Int)
        switch info.shape.count {
        case 1: (n, d) = (1, info.shape[0])
        case 2: (n, d) = (info.shape[0], info.shape[1])
        default: throw EmbeddingError.badShape(path: path, tensor: chosen, shape: info.shape)
        }
        guard n >= 1 && d >= 1 else { throw EmbeddingError.badShape(path: path, tensor: chosen, shape: info.shape) }
        let values = try file.tensor(chosen).data
        guard values.count == n * d else { throw EmbeddingError.badShape(path: path, tensor: chosen, shape: info.shape) }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw EmbeddingError.nonFinite(path: path, tensor: chosen, index: bad)
        }
        name = url.deletingPathExtension().lastPathComponent
        self.url = url
        vectors = values
        count = n
        width = d
        tensorName = chosen
    }

    /// Vector `k` (0 ≤ k < count).
    public func vector(_ k: Int) -> ArraySlice<Float> { vectors[(k * width)..<((k + 1) * width)] }
}

/// The embedding files of some folders, by name, found without opening them: an embedding is loaded
/// only when a prompt uses it, so one broken file stops only the prompts that call it.
public struct TextualInversionLibrary: Sendable {
    /// File extensions taken as embeddings (A1111's, images excepted).
    public static let extensions: Set<String> = ["safetensors", "pt", "bin"]

    /// Name (file stem) → file. Where a name occurs twice, the earlier folder wins, then the first path
    /// in sorted order.
    public let files: [String: URL]
    /// The names, sorted.
    public var names: [String] { files.keys.sorted() }

    /// No embeddings.
    public static let empty = TextualInversionLibrary(files: [:])

    /// A library of the given files by name.
    public init(files: [String: URL]) {
        self.files = files
    }

    /// The embedding files in `directories` and their subfolders (hidden entries skipped); folders
    /// that do not exist are skipped.
    public init(directories: [URL]) {
        var files: [String: URL] = [:]
        let fm = FileManager.default
        for directory in directories {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue,
                  let walker = fm.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey],
                                             options: [.skipsHiddenFiles]) else { continue }
            var found: [URL] = []
            for case let url as URL in walker where Self.extensions.contains(url.pathExtension.lowercased()) {
                found.append(url)
            }
            for url in found.sorted(by: { $0.path < $1.path }) {
                let name = url.deletingPathExtension().lastPathComponent
                if files[name] == nil { files[name] = url }
            }
        }
        self.files = files
    }

    /// Loads the embedding `name`.
    public func load(_ name: String) throws -> TextualInversionEmbedding {
        guard let url = files[name] else { throw EmbeddingError.unknown(name: name, known: names) }
        return try TextualInversionEmbedding(url: url)
    }
}

/// Embedding files that cannot be used; each message names the file.
public enum EmbeddingError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    case noVectors(path: String, tensors: [String])
    case ambiguous(path: String, tensors: [String])
    case sdxl(path: String)
    case badShape(path: String, tensor: String, shape: [Int])
    case nonFinite(path: String, tensor: String, index: Int)
    case unknown(name: String, known: [String])
    /// The embedding's width is not the text encoder's.
    case wrongWidth(name: String, path: String, width: Int, expected: Int)
    /// More vectors than one chunk of the prompt holds.
    case tooManyVectors(name: String, path: String, count: Int, limit: Int)

    public var description: String {
        switch self {
        case let .noVectors(path, tensors):
            return "\(path): not a textual-inversion embedding: no floating-point tensor (found: \(tensors.isEmpty ? "none" : tensors.joined(separator: ", ")))"
        case let .ambiguous(path, tensors):
            return "\(path): not a textual-inversion embedding: expected one vector tensor (A1111's string_to_param/emb_params, or diffusers' {token: vector}), found \(tensors.joined(separator: ", "))"
        case let .sdxl(path):
            return "\(path): an SDXL embedding (clip_l and clip_g vectors); this program runs SD 1.x and 2.x models"
        case let .badShape(path, tensor, shape):
            return "\(path): tensor \"\(tensor)\" has shape \(shape); an embedding is [vectors, width] or [width]"
        case let .nonFinite(path, tensor, index):
            return "\(path): tensor \"\(tensor)\" holds a non-finite value (NaN or infinity) at element \(index)"
        case let .unknown(name, known):
            return "no embedding named \"\(name)\" (known: \(known.isEmpty ? "none" : known.joined(separator: ", ")))"
        case let .wrongWidth(name, path, width, expected):
            return "embedding \"\(name)\" (\(path)) has vectors of width \(width), but this model's text encoder is \(expected) wide"
                + (width == 768 ? " (an SD 1.x embedding)" : width == 1024 ? " (an SD 2.x embedding)" : "")
                + "; use an embedding trained for this model, or rename the file so its name does not occur in the prompt"
        case let .tooManyVectors(name, path, count, limit):
            return "embedding \"\(name)\" (\(path)) has \(count) vectors; a prompt chunk holds at most \(limit)"
        }
    }

    public var errorDescription: String? { description }
}
