import Foundation

/// Errors raised while loading a CLIP tokenizer. Every message names the offending file.
public enum TokenizerError: Error, CustomStringConvertible {
    /// A required file (vocab.json, merges.txt) does not exist.
    case missingFile(URL)
    /// The file exists but could not be read.
    case unreadableFile(URL, reason: String)
    /// vocab.json is not a JSON object mapping token strings to non-negative integer ids.
    case malformedVocabulary(URL, reason: String)
    /// merges.txt has a line that is not `left right`, or names tokens missing from the vocabulary.
    case malformedMerges(URL, line: Int, reason: String)
    /// tokenizer_config.json or special_tokens_map.json is not valid JSON or has an unexpected shape.
    case malformedConfiguration(URL, reason: String)
    /// A special token (`role` is "pad", "bos", "eos", "unk" or "added") is not in the vocabulary.
    case tokenNotInVocabulary(token: String, role: String, vocabulary: URL)
    /// The maximum sequence length must hold at least BOS and EOS.
    case invalidMaxLength(Int)

    public var description: String {
        switch self {
        case .missingFile(let url):
            return "tokenizer file not found: \(url.path)"
        case .unreadableFile(let url, let reason):
            return "cannot read tokenizer file \(url.path): \(reason)"
        case .malformedVocabulary(let url, let reason):
            return "malformed vocabulary \(url.path): \(reason)"
        case .malformedMerges(let url, let line, let reason):
            return "malformed merges file \(url.path), line \(line): \(reason)"
        case .malformedConfiguration(let url, let reason):
            return "malformed tokenizer configuration \(url.path): \(reason)"
        case .tokenNotInVocabulary(let token, let role, let vocabulary):
            return "\(role) token \(String(reflecting: token)) is not in vocabulary \(vocabulary.path)"
        case .invalidMaxLength(let n):
            return "invalid maximum sequence length \(n): must be at least 2 (BOS and EOS)"
        }
    }
}
