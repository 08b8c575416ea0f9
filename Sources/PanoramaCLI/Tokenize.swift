import ArgumentParser
import Foundation
import Models
import Tokenization
import Weights

/// `panorama tokenize`: the token ids the text encoder will see, and the prompt's length.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the CLIP token ids of prompts and their length.",
        discussion: """
            For each prompt prints the 77 ids the text encoder receives (BOS, tokens, EOS, then \
            padding; longer prompts are truncated) and the prompt's length in tokens including \
            BOS and EOS. A length above 77 means the end of the prompt is cut off.

            With --parse, also shows the prompt as render, compose and upscale read it (--emphasis): \
            its chunks of 75 tokens, each token's weight, and the textual-inversion embeddings found.
            """)

    @Option(name: .long, help: ArgumentHelp(
        "A diffusers model folder (or its tokenizer/ folder), or a single-file checkpoint, .safetensors or PyTorch .ckpt (default: the bundled \(Resources.defaultModelName) model).",
        valueName: "dir|file"))
    var model: String?

    @Option(name: .customLong("model-config"), help: ArgumentHelp(
        "For a single-file --model: a diffusers folder of the same architecture, whose tokenizer is used.", valueName: "dir"))
    var modelConfig: String?

    @Flag(name: .long, help: "Print one JSON array of {\"ids\": [...], \"length\": n}, one object per prompt.")
    var json = false

    @Flag(name: .long, help: "Also show each prompt parsed as --emphasis reads it: chunks, tokens, weights, embeddings (with --json: a \"chunks\" array per prompt).")
    var parse = false

    @Option(name: .long, help: ArgumentHelp("With --parse: a1111 or none, as for render (default a1111).", valueName: "a1111|none"))
    var emphasis: String?

    @Option(name: .customLong("embeddings-dir"), help: ArgumentHelp(
        "With --parse: the folder of textual-inversion embeddings (default: an embeddings folder beside the model, then models/embeddings).",
        valueName: "dir"))
    var embeddingsDir: String?

    @Argument(help: "Prompts to tokenize.")
    var prompts: [String]

    func run() throws {
        let tokenizer = try self.tokenizer()
        let results = prompts.map { tokenizer($0) }
        let parsed = parse ? try prompts.map { try parsedPrompt($0, tokenizer: tokenizer) } : nil
        if json {
            let objects = results.enumerated().map { k, r in
                "{\"ids\": [\(r.ids.map(String.init).joined(separator: ", "))], \"length\": \(r.length)"
                    + (parsed.map { ", \"chunks\": " + Self.json($0[k]) } ?? "") + "}"
            }
            print("[" + objects.joined(separator: ", ") + "]")
            return
        }
        let vocabulary = parse ? tokenizer.tokensByID() : [:]
        for (k, (prompt, r)) in zip(prompts, results).enumerated() {
            let note = r.length > tokenizer.maxLength
                ? " (truncated to \(tokenizer.maxLength): the end of the prompt is ignored)" : ""
            print("\(r.length) tokens\(note): \(prompt)")
            print(r.ids.map(String.init).joined(separator: " "))
            if let parsed { print(Self.describe(parsed[k], tokenizer: tokenizer, vocabulary: vocabulary)) }
        }
    }
}

extension Tokenize {
    /// The tokenizer of --model: a folder's, or the one a single-file checkpoint loads with (the
    /// bundled model's CLIP files, padded as the checkpoint's family pads, or --model-config's).
    func tokenizer() throws -> CLIPTokenizer {
        guard let path = model.map({ ($0 as NSString).expandingTildeInPath }) ?? Resources.defaultModel?.path else {
            throw ValidationError("no model: pass --model DIR|FILE; the bundled model models/\(Resources.defaultModelName) was not found")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            guard modelConfig == nil else {
                throw ValidationError("--model-config applies to a single-file --model, not to the folder \(path)")
            }
            return try CLIPTokenizer(directory: try tokenizerDirectory(path))
        }
        let url = URL(fileURLWithPath: path)
        let configuration = try checkpointConfiguration(modelConfig: modelConfig, predictionType: nil)
        return try withConfigurationHint { try StableDiffusionModel.tokenizer(checkpoint: url, configuration: configuration) }
    }
}

/// `dir/tokenizer` for a diffusers folder, or `dir` itself when it holds vocab.json.
func tokenizerDirectory(_ path: String) throws -> URL {
    let url = URL(fileURLWithPath: path)
    let fm = FileManager.default
    if fm.fileExists(atPath: url.appendingPathComponent("tokenizer/vocab.json").path) {
        return url.appendingPathComponent("tokenizer")
    }
    if fm.fileExists(atPath: url.appendingPathComponent("vocab.json").path) { return url }
    throw ValidationError("\(path) has no tokenizer: expected \(path)/tokenizer/vocab.json (a diffusers model folder) or \(path)/vocab.json")
}

extension Tokenize {
    /// A prompt as the generating commands read it, with the embeddings it calls.
    struct Parsed {
        var parsed: ParsedPrompt
        var emphasis: PromptEmphasis
        var embeddings: [String: TextualInversionEmbedding]
        /// The extra-network tags (`<lora:…>`) removed from the text before it was read.
        var tags: [ExtraNetworkTag] = []
    }

    func parsedPrompt(_ text: String, tokenizer: CLIPTokenizer) throws -> Parsed {
        let (prompt, tags) = ExtraNetworkTags.extract(text)
        let name = emphasis ?? "a1111"
        guard let mode = PromptEmphasis(rawValue: name.lowercased()) else {
            throw ValidationError("unknown --emphasis \"\(name)\"; available: a1111, none")
        }
        let modelURL = model.map { URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath) } ?? Resources.defaultModel
        let library = TextualInversionLibrary(directories: try promptEmbeddingDirectories(explicit: embeddingsDir, model: modelURL))
        let names = try PromptChunker.embeddingNames(in: prompt, candidates: library.names, tokenizer: tokenizer, emphasis: mode)
        var loaded: [String: TextualInversionEmbedding] = [:]
        for name in names { loaded[name] = try library.load(name) }
        let chunker = try PromptChunker(tokenizer: tokenizer, embeddings: names.map { ($0, loaded[$0]!.count) })
        return Parsed(parsed: try chunker.parse(prompt, emphasis: mode), emphasis: mode, embeddings: loaded, tags: tags)
    }

    /// The chunks as text: the prompt's tokens (BOS, EOS and padding left out) grouped by weight.
    static func describe(_ p: Parsed, tokenizer: CLIPTokenizer, vocabulary: [Int: String]) -> String {
        let chunks = p.parsed.chunks
        var lines = ["parsed (emphasis \(p.emphasis.rawValue)): \(chunks.count) chunk\(chunks.count == 1 ? "" : "s"), "
                     + "\(p.parsed.tokenCount) token\(p.parsed.tokenCount == 1 ? "" : "s")"]
        if !p.tags.isEmpty {
            lines.append("  removed (they choose LoRAs, not text): " + p.tags.map(\.text).joined(separator: " "))
        }
        if !p.embeddings.isEmpty {
            lines.append("  embeddings: " + p.parsed.embeddingsUsed.map { name in
                let e = p.embeddings[name]!
                return "\(name) (\(e.count) vector\(e.count == 1 ? "" : "s"), \(e.url.path))"
            }.joined(separator: ", "))
        }
        for (k, chunk) in chunks.enumerated() {
            var slots: [Int: String] = [:]
            for e in chunk.embeddings {
                for v in 0..<e.vectors.count { slots[e.position + v] = v == 0 ? "<\(e.name)>" : "" }
            }
            // Prompt positions: after BOS, up to the padding (or the last EOS of a full chunk).
            var end = chunk.ids.count - 1
            while end > 1, slots[end - 1] == nil,
                  chunk.ids[end - 1] == tokenizer.eosTokenID || chunk.ids[end - 1] == tokenizer.padTokenID { end -= 1 }
            if p.emphasis == .none, end > 1, chunk.ids[end - 1] == tokenizer.eosTokenID { end -= 1 }
            var groups: [(weight: Double, text: String)] = []
            for i in 1..<max(end, 1) {
                let piece = slots[i] ?? (vocabulary[chunk.ids[i]] ?? "#\(chunk.ids[i])").replacingOccurrences(of: "</w>", with: " ")
                if groups.last?.weight == chunk.weights[i] {
                    groups[groups.count - 1].text += piece
                } else {
                    groups.append((chunk.weights[i], piece))
                }
            }
            let body = groups.map { g in
                let text = g.text.trimmingCharacters(in: .whitespaces)
                return g.weight == 1 ? text : "(\(text):\(Self.format(g.weight)))"
            }.joined(separator: " ")
            let count = max(end - 1, 0)
            lines.append("  chunk \(k + 1) (\(count) token\(count == 1 ? "" : "s")): \(body)")
        }
        return lines.joined(separator: "\n")
    }

    static func format(_ w: Double) -> String { String(format: "%.4g", w) }

    /// The chunks as JSON: ids, weights and embedding placements.
    static func json(_ p: Parsed) -> String {
        "[" + p.parsed.chunks.map { c in
            "{\"ids\": [\(c.ids.map(String.init).joined(separator: ", "))], "
                + "\"weights\": [\(c.weights.map { "\($0)" }.joined(separator: ", "))], "
                + "\"embeddings\": [" + c.embeddings.map { e in
                    "{\"name\": \(jsonString(e.name)), \"position\": \(e.position), \"vectors\": \(e.vectors.count)}"
                }.joined(separator: ", ") + "]}"
        }.joined(separator: ", ") + "]"
    }

    static func jsonString(_ s: String) -> String {
        let data = try? JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])
        let array = data.flatMap { String(data: $0, encoding: .utf8) } ?? "[\"\"]"
        return String(array.dropFirst().dropLast())
    }
}
