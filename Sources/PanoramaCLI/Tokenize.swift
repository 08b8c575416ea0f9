import ArgumentParser
import Foundation
import Models
import Tokenization

/// `panorama tokenize`: the token ids the text encoder will see, and the prompt's length.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the CLIP token ids of prompts and their length.",
        discussion: """
            For each prompt prints the 77 ids the text encoder receives (BOS, tokens, EOS, then \
            padding; longer prompts are truncated) and the prompt's length in tokens including \
            BOS and EOS. A length above 77 means the end of the prompt is cut off.
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

    @Argument(help: "Prompts to tokenize.")
    var prompts: [String]

    func run() throws {
        let tokenizer = try self.tokenizer()
        let results = prompts.map { tokenizer($0) }
        if json {
            let objects = results.map { "{\"ids\": [\($0.ids.map(String.init).joined(separator: ", "))], \"length\": \($0.length)}" }
            print("[" + objects.joined(separator: ", ") + "]")
            return
        }
        for (prompt, r) in zip(prompts, results) {
            let note = r.length > tokenizer.maxLength
                ? " (truncated to \(tokenizer.maxLength): the end of the prompt is ignored)" : ""
            print("\(r.length) tokens\(note): \(prompt)")
            print(r.ids.map(String.init).joined(separator: " "))
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
