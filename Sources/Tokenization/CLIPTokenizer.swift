import Foundation

/// A prompt tokenized the way the Stable Diffusion pipelines call the tokenizer
/// (`padding="max_length", truncation=True, max_length=model_max_length`).
public struct TokenizedPrompt: Sendable, Equatable {
    /// Exactly `maxLength` ids: BOS, tokens, EOS, then pad ids; if too long, cut to `maxLength - 1` and EOS appended.
    public let ids: [Int]
    /// Number of ids before truncation and padding, BOS and EOS included.
    public let length: Int

    public init(ids: [Int], length: Int) {
        self.ids = ids
        self.length = length
    }
}

/// CLIP's byte-level BPE tokenizer, id for id identical to Hugging Face transformers' `CLIPTokenizer`
/// (transformers 5, backed by `tokenizers`).
///
/// Pipeline: special tokens typed literally in the prompt are matched first (and become their ids); the rest is
/// NFC-normalized, whitespace-collapsed and lowercased, split into words by CLIP's regex (whitespace dropped,
/// runs of letters, single digits, runs of other characters, English contractions), and each word's UTF-8 bytes are
/// BPE-encoded with `</w>` marking the word end. `encode` wraps the result in BOS/EOS.
public struct CLIPTokenizer: Sendable {
    /// Length of the padded/truncated id sequence (`model_max_length`, 77 for SD).
    public let maxLength: Int
    /// Id used to pad to `maxLength` (`<|endoftext|>` for SD 1.x, `!` = 0 for SD 2.x).
    public let padTokenID: Int
    /// Id of `<|startoftext|>`.
    public let bosTokenID: Int
    /// Id of `<|endoftext|>`.
    public let eosTokenID: Int

    private let model: BytePairEncoder
    private let rawTokens: LiteralMatcher
    private let normalizedTokens: LiteralMatcher

    /// Loads `vocab.json` and `merges.txt`, like `CLIPTokenizer(vocab=..., merges=..., pad_token=padToken)`:
    /// BOS `<|startoftext|>`, EOS and UNK `<|endoftext|>`; special tokens are matched in the raw prompt. The pad
    /// token is one of them: with `"!"` (SD 2.x) every "!" in a prompt becomes its own id 0, as in transformers.
    public init(vocabulary: URL, merges: URL, padToken: String = "<|endoftext|>", maxLength: Int = 77) throws {
        try self.init(vocabulary: vocabulary, merges: merges, maxLength: maxLength, specials: SpecialTokens(
            bos: .init(content: "<|startoftext|>"), eos: .init(content: "<|endoftext|>"),
            unk: .init(content: "<|endoftext|>"), pad: .init(content: padToken), others: [], added: []))
    }

    /// Loads a diffusers `tokenizer/` folder: `vocab.json`, `merges.txt` and, if present, `tokenizer_config.json`
    /// and `special_tokens_map.json`, resolved like transformers' `from_pretrained`: the special-token map
    /// overrides the config unless the config has `added_tokens_decoder`; a token may be a string or an object
    /// with `"content"` (and `"normalized"`); `model_max_length` defaults to 77.
    public init(directory: URL) throws {
        let configuration = try TokenizerConfiguration(directory: directory)
        try self.init(vocabulary: directory.appendingPathComponent("vocab.json"),
                      merges: directory.appendingPathComponent("merges.txt"),
                      maxLength: configuration.maxLength, specials: configuration.specials)
    }

    private init(vocabulary: URL, merges: URL, maxLength: Int, specials: SpecialTokens) throws {
        guard maxLength >= 2 else { throw TokenizerError.invalidMaxLength(maxLength) }
        if !FileManager.default.fileExists(atPath: vocabulary.path) { throw TokenizerError.missingFile(vocabulary) }
        if !FileManager.default.fileExists(atPath: merges.path) { throw TokenizerError.missingFile(merges) }
        let model = try BytePairEncoder(vocabularyURL: vocabulary, mergesURL: merges, unknownToken: specials.unk.content)
        func id(_ token: SpecialTokens.Token, _ role: String) throws -> Int {
            guard let id = model.id(of: token.content) else {
                throw TokenizerError.tokenNotInVocabulary(token: token.content, role: role, vocabulary: vocabulary)
            }
            return id
        }
        self.model = model
        self.maxLength = maxLength
        self.bosTokenID = try id(specials.bos, "bos")
        self.eosTokenID = try id(specials.eos, "eos")
        self.padTokenID = try id(specials.pad, "pad")
        let unkID = try id(specials.unk, "unk")

        // Added tokens as transformers registers them: the config's added_tokens_decoder, then the special tokens
        // not already among those, in the order bos, eos, unk, sep, pad, cls, mask; for a repeated content the
        // last registration's flags win (e.g. pad "<|endoftext|>" as a plain string un-normalizes EOS).
        var added: [AddedToken] = specials.added
        let decoderContents = Set(added.map(\.content))
        var named: [(SpecialTokens.Token, Int)] = [(specials.bos, bosTokenID), (specials.eos, eosTokenID), (specials.unk, unkID)]
        for (role, token) in specials.others where role == "sep" { named.append((token, try id(token, role))) }
        named.append((specials.pad, padTokenID))
        for (role, token) in specials.others where role != "sep" { named.append((token, try id(token, role))) }
        for (token, tokenID) in named where !decoderContents.contains(token.content) {
            if let k = added.firstIndex(where: { $0.content == token.content }) {
                added[k].normalized = token.normalized
            } else {
                added.append(AddedToken(content: token.content, id: tokenID, normalized: token.normalized))
            }
        }
        rawTokens = LiteralMatcher(added.filter { !$0.normalized }.map { ($0.content.unicodeScalars.map(\.value), $0.id) })
        normalizedTokens = LiteralMatcher(added.filter(\.normalized).map {
            (CLIPPreTokenizer.normalize(ArraySlice($0.content.unicodeScalars.map(\.value))), $0.id)
        })
    }

    /// Id → token as vocab.json spells it (`</w>` ends a word); built on each call, for display.
    public func tokensByID() -> [Int: String] { model.tokensByID() }

    /// BOS, the prompt's tokens, EOS: untruncated and unpadded (`tokenizer(text).input_ids`).
    public func encode(_ text: String) -> [Int] {
        var ids = [bosTokenID]
        rawTokens.split(text.unicodeScalars.map(\.value)) { segment in
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let raw):
                normalizedTokens.split(CLIPPreTokenizer.normalize(raw)) { piece in
                    switch piece {
                    case .token(let id):
                        ids.append(id)
                    case .text(let normalized):
                        CLIPPreTokenizer.forEachWord(Array(normalized)) { model.encodeWord($0, into: &ids) }
                    }
                }
            }
        }
        ids.append(eosTokenID)
        return ids
    }

    /// The ids as SD pipelines get them: padded with `padTokenID` to `maxLength`, or cut to `maxLength - 1`
    /// with EOS appended; `length` is the untruncated count.
    public func callAsFunction(_ text: String) -> TokenizedPrompt {
        let full = encode(text)
        var ids = full
        if ids.count > maxLength {
            ids.removeLast(ids.count - (maxLength - 1))
            ids.append(eosTokenID)
        } else {
            ids.append(contentsOf: repeatElement(padTokenID, count: maxLength - ids.count))
        }
        return TokenizedPrompt(ids: ids, length: full.count)
    }
}

/// The special tokens of a tokenizer and the extra added tokens of `added_tokens_decoder`.
struct SpecialTokens {
    struct Token {
        var content: String
        /// Matched in the normalized text instead of the raw text.
        var normalized: Bool = false
    }

    var bos: Token
    var eos: Token
    var unk: Token
    var pad: Token
    /// Optional "sep", "cls" and "mask" tokens (absent in CLIP configurations).
    var others: [(role: String, token: Token)]
    var added: [AddedToken]
}

/// `tokenizer_config.json` + `special_tokens_map.json`, resolved as transformers 5's `from_pretrained` does.
/// Added-token flags other than `normalized` (`lstrip`, `rstrip`, `single_word`; all false in SD folders) are
/// ignored, and a `tokenizer.json` in the folder is not read.
struct TokenizerConfiguration {
    var maxLength = 77
    var specials: SpecialTokens

    init(directory: URL) throws {
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let mapURL = directory.appendingPathComponent("special_tokens_map.json")
        let config = try Self.readObject(configURL) ?? [:]

        // Entry: a string (special, not normalized) or an object with "content" (AddedToken fields).
        typealias Entry = (value: Any, file: URL)
        var entries: [String: Entry] = [:]
        for (key, value) in config { entries[key] = (value, configURL) }

        var added: [AddedToken] = []
        if let decoder = config["added_tokens_decoder"] {
            guard let decoder = decoder as? [String: Any] else {
                throw TokenizerError.malformedConfiguration(configURL, reason: "added_tokens_decoder is not an object")
            }
            for (key, value) in decoder.sorted(by: { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }) {
                guard let id = Int(key), let object = value as? [String: Any], let content = object["content"] as? String else {
                    throw TokenizerError.malformedConfiguration(configURL, reason: "bad added_tokens_decoder entry \(key)")
                }
                let special = object["special"] as? Bool ?? false
                added.append(AddedToken(content: content, id: id, normalized: object["normalized"] as? Bool ?? !special))
            }
        } else if let map = try Self.readObject(mapURL) {
            // Legacy layout: special_tokens_map.json overrides tokenizer_config.json.
            for (key, value) in map { entries[key] = (value, mapURL) }
        }

        func token(_ key: String, default content: String?) throws -> SpecialTokens.Token? {
            guard let entry = entries[key], !(entry.value is NSNull) else { return content.map { .init(content: $0) } }
            let resolved: SpecialTokens.Token
            if let string = entry.value as? String {
                resolved = .init(content: string, normalized: false)
            } else if let object = entry.value as? [String: Any], let string = object["content"] as? String {
                // special_tokens_map.json objects become AddedToken(special=True): normalized defaults to false;
                // tokenizer_config.json's {"__type": "AddedToken"} objects to AddedToken(special=False): true.
                let defaultNormalized = entry.file == configURL && object["special"] as? Bool != true
                resolved = .init(content: string, normalized: object["normalized"] as? Bool ?? defaultNormalized)
            } else {
                throw TokenizerError.malformedConfiguration(entry.file, reason: "\(key) is neither a string nor an object with \"content\"")
            }
            if let known = added.first(where: { $0.content == resolved.content }) {
                return .init(content: known.content, normalized: known.normalized)
            }
            return resolved
        }
        var others: [(role: String, token: SpecialTokens.Token)] = []
        for role in ["sep", "cls", "mask"] {
            if let t = try token(role + "_token", default: nil) { others.append((role, t)) }
        }
        specials = SpecialTokens(bos: try token("bos_token", default: "<|startoftext|>")!,
                                 eos: try token("eos_token", default: "<|endoftext|>")!,
                                 unk: try token("unk_token", default: "<|endoftext|>")!,
                                 pad: try token("pad_token", default: "<|endoftext|>")!,
                                 others: others, added: added)
        if let value = config["model_max_length"] as? NSNumber, let n = Int(exactly: value.doubleValue),
           n >= 2, n <= 1_000_000 {
            maxLength = n
        }
    }

    /// The JSON object in `url`, or nil if the file does not exist.
    static func readObject(_ url: URL) throws -> [String: Any]? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let data = try BytePairEncoder.readData(url)
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw TokenizerError.malformedConfiguration(url, reason: "not valid JSON (\(error))")
        }
        guard let dictionary = object as? [String: Any] else {
            throw TokenizerError.malformedConfiguration(url, reason: "expected a JSON object")
        }
        return dictionary
    }
}
