import Foundation
import Tokenization
import Weights

/// A LoRA a render asks for: a file given by path (`--lora PATH[:WEIGHT]`) or a name from a
/// prompt's `<lora:NAME:WEIGHT>` / `<lora:NAME:TE_WEIGHT:UNET_WEIGHT>` tag, looked up in a
/// `LoRALibrary`.
public struct LoRARequest: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        case file(URL)
        case name(String)
    }

    public var source: Source
    public var textEncoderWeight: Float
    public var unetWeight: Float

    public init(source: Source, textEncoderWeight: Float = 1, unetWeight: Float? = nil) {
        self.source = source
        self.textEncoderWeight = textEncoderWeight
        self.unetWeight = unetWeight ?? textEncoderWeight
    }

    /// `PATH` or `PATH:WEIGHT` (the weight is taken from after the last colon when that is a
    /// number, so paths with colons still work).
    public init(option: String) throws {
        var path = option, weight: Float = 1
        if let colon = option.lastIndex(of: ":"), let w = Float(option[option.index(after: colon)...]) {
            path = String(option[..<colon])
            weight = w
        }
        guard !path.isEmpty else { throw LoRAError.invalidRequest("--lora \(option): no file given; use --lora PATH[:WEIGHT]") }
        guard weight.isFinite else { throw LoRAError.invalidRequest("--lora \(option): the weight must be a finite number") }
        self.init(source: .file(URL(fileURLWithPath: (path as NSString).expandingTildeInPath)), textEncoderWeight: weight)
    }

    /// The LoRA tags of `prompts`, in order, as A1111 reads them: `<lora:NAME>` (weight 1),
    /// `<lora:NAME:W>`, `<lora:NAME:TE:UNET>`, or named `te=` / `unet=` arguments; `lyco` is
    /// A1111's other name for `lora`. The same tag written in several prompts (say, every region's)
    /// counts once. Tags of other kinds (hypernetworks) are refused, not ignored.
    public static func fromPrompts(_ prompts: [String]) throws -> [LoRARequest] {
        // Each request as often as the prompt that repeats it most: a repeat within one prompt
        // adds up, as in A1111; the same tag copied into several prompts counts once.
        var requests: [LoRARequest] = []
        for prompt in prompts {
            var counts: [(LoRARequest, Int)] = []
            for tag in ExtraNetworkTags.extract(prompt).tags {
                let request = try LoRARequest(tag: tag)
                if let k = counts.firstIndex(where: { $0.0 == request }) { counts[k].1 += 1 } else { counts.append((request, 1)) }
            }
            for (request, count) in counts {
                let have = requests.filter { $0 == request }.count
                requests += Array(repeating: request, count: max(0, count - have))
            }
        }
        return requests
    }

    init(tag: ExtraNetworkTag) throws {
        guard ["lora", "lyco"].contains(tag.kind.lowercased()) else {
            throw LoRAError.invalidRequest("the prompt's tag \(tag.text) asks for a \"\(tag.kind)\" network; only "
                + "<lora:NAME:WEIGHT> tags are supported (hypernetworks and other kinds are not)")
        }
        let positional = tag.positional, named = tag.named
        guard let name = positional.first?.trimmingCharacters(in: .whitespaces), !name.isEmpty else {
            throw LoRAError.invalidRequest("the prompt's tag \(tag.text) names no LoRA; write <lora:NAME:WEIGHT>")
        }
        func number(_ text: String?, _ what: String) throws -> Float? {
            guard let text else { return nil }
            guard let value = Float(text.trimmingCharacters(in: .whitespaces)), value.isFinite else {
                throw LoRAError.invalidRequest("the prompt's tag \(tag.text): its \(what) \"\(text)\" is not a number")
            }
            return value
        }
        let te = try number(named["te"], "text encoder weight")
            ?? number(positional.count > 1 ? positional[1] : nil, "weight") ?? 1
        let unet = try number(named["unet"], "UNet weight") ?? number(positional.count > 2 ? positional[2] : nil, "UNet weight")
        self.init(source: .name(name), textEncoderWeight: te, unetWeight: unet ?? te)
    }

    /// `prompt` without its extra-network tags: the text the text encoder sees.
    public static func strippingTags(_ prompt: String) -> String {
        ExtraNetworkTags.extract(prompt).text
    }
}

/// The folders `<lora:NAME>` tags are looked up in, in order: a file whose name without extension
/// is NAME (`.safetensors` first), anywhere below a folder, as A1111 searches its `Lora` folder.
public struct LoRALibrary: Sendable, Equatable {
    public static let extensions = ["safetensors", "ckpt", "pt", "pth", "bin"]
    public var folders: [URL]

    public init(folders: [URL]) {
        self.folders = folders
    }

    /// The default folders for a model at `model`: `lora` (or A1111's `Lora`) beside it, then
    /// `fallback` (the project's `models/lora`).
    public static func defaultFolders(model: URL, fallback: URL?) -> [URL] {
        let parent = model.standardizedFileURL.deletingLastPathComponent()
        return [parent.appendingPathComponent("lora"), parent.appendingPathComponent("Lora")] + (fallback.map { [$0] } ?? [])
    }

    /// The file for `name`; the error lists the folders searched and the names found there.
    public func file(named name: String) throws -> URL {
        var available: [String] = []
        for folder in folders {
            let files = Self.loraFiles(in: folder)
            for ext in Self.extensions {
                if let match = files.first(where: { $0.deletingPathExtension().lastPathComponent == name
                        && $0.pathExtension.lowercased() == ext }) {
                    return match
                }
            }
            available += files.map { $0.deletingPathExtension().lastPathComponent }
        }
        let searched = folders.map(\.path).joined(separator: ", ")
        let names = Array(Set(available)).sorted()
        let list = names.isEmpty ? "none" : names.prefix(20).joined(separator: ", ") + (names.count > 20 ? ", …" : "")
        throw LoRAError.invalidRequest("no LoRA named \"\(name)\" in \(searched.isEmpty ? "any folder" : searched) "
            + "(LoRAs found there: \(list)); put the file there, or pass --lora-dir DIR or --lora PATH")
    }

    /// LoRA files below `folder`, a few levels deep, in a stable order.
    private static func loraFiles(in folder: URL) -> [URL] {
        guard let walker = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey],
                                                          options: [.skipsHiddenFiles]) else { return [] }
        var files: [URL] = []
        for case let url as URL in walker {
            if walker.level > 4 { walker.skipDescendants() }
            if extensions.contains(url.pathExtension.lowercased()) { files.append(url) }
        }
        return files.sorted { $0.path < $1.path }
    }
}

extension LoRARequest {
    /// Reads the files of `requests` (names from `library`), each file once.
    public static func resolve(_ requests: [LoRARequest], library: LoRALibrary) throws -> [LoRAApplication] {
        var loaded: [URL: LoRA] = [:]
        return try requests.map { request in
            let url: URL, name: String
            switch request.source {
            case let .file(file):
                url = file
                name = file.deletingPathExtension().lastPathComponent
            case let .name(tagName):
                url = try library.file(named: tagName)
                name = tagName
            }
            let lora = try loaded[url] ?? LoRA(url: url)
            loaded[url] = lora
            return LoRAApplication(lora: lora, textEncoderWeight: request.textEncoderWeight,
                                   unetWeight: request.unetWeight, name: name)
        }
    }
}
