import ArgumentParser
import Foundation
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

    @Option(name: .long, help: ArgumentHelp("A diffusers model folder (or its tokenizer/ folder).", valueName: "dir"))
    var model: String

    @Flag(name: .long, help: "Print one JSON array of {\"ids\": [...], \"length\": n}, one object per prompt.")
    var json = false

    @Argument(help: "Prompts to tokenize.")
    var prompts: [String]

    func run() throws {
        let tokenizer = try CLIPTokenizer(directory: try tokenizerDirectory(model))
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
