import Foundation

/// How a prompt's text becomes token windows for the text encoder.
public enum PromptEmphasis: String, Sendable, CaseIterable {
    /// AUTOMATIC1111's syntax: `(emphasis)`, `[de-emphasis]`, `(text:1.3)`, `BREAK`, prompts of any
    /// length in chunks of 75 tokens, each encoded on its own and weighted by A1111's "Original" emphasis.
    case a1111
    /// The text as written, one 77-token window, cut after 77 tokens: what diffusers' pipelines do.
    case none
}

/// Where a textual-inversion embedding's vectors go in a chunk.
public struct EmbeddingPlacement: Sendable, Equatable {
    /// The embedding's name (its file's stem).
    public var name: String
    /// Position in the chunk's ids (BOS is position 0) of the first vector.
    public var position: Int
    /// Which of the embedding's vectors fill `position`, `position + 1`, …; all of them unless a
    /// 77-token window (`--emphasis none`) cut the embedding off.
    public var vectors: Range<Int>

    public init(name: String, position: Int, vectors: Range<Int>) {
        self.name = name
        self.position = position
        self.vectors = vectors
    }
}

/// One window of the text encoder: BOS, 75 prompt tokens (padded), EOS.
public struct PromptChunk: Sendable, Equatable {
    /// The ids the text encoder receives (`maxLength` of them). An embedding's slots hold id 0 (their
    /// vectors come from the embedding file, as A1111 fills them); with a tokenizer whose pad id is not
    /// EOS (SD 2.x), every id after the first EOS is the pad id, as A1111 does for OpenCLIP.
    public var ids: [Int]
    /// The weight of each position (1 for BOS, EOS and padding).
    public var weights: [Double]
    /// The embeddings in this chunk.
    public var embeddings: [EmbeddingPlacement]

    public init(ids: [Int], weights: [Double], embeddings: [EmbeddingPlacement]) {
        self.ids = ids
        self.weights = weights
        self.embeddings = embeddings
    }
}

/// A prompt as the text encoder will see it.
public struct ParsedPrompt: Sendable, Equatable {
    /// The emphasis runs (`PromptAttention.parse`; the whole text with weight 1 under `.none`).
    public var runs: [PromptAttention.Run]
    /// The windows, each encoded on its own.
    public var chunks: [PromptChunk]
    /// Prompt tokens counted as A1111 counts them (embedding vectors included, BOS/EOS and padding not;
    /// under `.none` BOS and EOS are included, as `panorama tokenize` counts).
    public var tokenCount: Int

    /// The names of the embeddings used, in order of first use.
    public var embeddingsUsed: [String] {
        var seen = Set<String>(), names: [String] = []
        for chunk in chunks {
            for e in chunk.embeddings where seen.insert(e.name).inserted { names.append(e.name) }
        }
        return names
    }
}

/// Cuts prompts into text-encoder windows the way AUTOMATIC1111 does (`modules/sd_hijack_clip.py`,
/// `tokenize_line`), with textual-inversion embeddings matched at token level
/// (`EmbeddingDatabase.find_embedding_at_position`).
///
/// Under `.a1111` each emphasis run is tokenized on its own (no BOS/EOS, no truncation) and its tokens
/// fill chunks of `maxLength − 2` (75). When a chunk is full and the next token is not a comma, but a
/// comma lies within the chunk's last 20 tokens, the tokens after that comma move to the next chunk
/// ("word wrap"). `BREAK` closes the chunk (even an empty one). An embedding's vectors never straddle
/// two chunks. Chunks are padded with EOS, wrapped in BOS/EOS and, for tokenizers that pad with another
/// id (SD 2.x), given pad ids after the first EOS. An empty prompt is one chunk.
///
/// One deliberate difference from A1111: when the comma wrap moves tokens to the next chunk, an
/// embedding among them keeps its vectors (A1111 leaves their placement behind, so the moved slots
/// would be encoded as token 0, "!").
public struct PromptChunker: Sendable {
    /// A1111's `comma_padding_backtrack` default.
    public static let commaBacktrack = 20

    /// The tokenizer prompt text and embedding names go through.
    public let tokenizer: CLIPTokenizer
    /// Prompt tokens per chunk (75 for a 77-token encoder).
    public var chunkLength: Int { tokenizer.maxLength - 2 }

    private let commaID: Int?
    /// Per first token id: (the name's token ids, name, vector count), longest token sequence first.
    private let lookup: [Int: [(ids: [Int], name: String, vectors: Int)]]

    /// A chunker with `embeddings` (name → number of vectors) known by name. Names are tokenized like
    /// prompt text; among names starting with the same token, the longer token sequence matches first
    /// (then the order given).
    public init(tokenizer: CLIPTokenizer, embeddings: [(name: String, vectors: Int)] = []) throws {
        guard tokenizer.maxLength >= 3 else { throw TokenizerError.invalidMaxLength(tokenizer.maxLength) }
        self.tokenizer = tokenizer
        // A1111 looks up ",</w>" in the vocabulary; a lone comma tokenizes to exactly that token.
        let comma = Self.tokens(tokenizer, ",")
        commaID = comma.count == 1 ? comma[0] : nil
        var lookup: [Int: [(ids: [Int], name: String, vectors: Int)]] = [:]
        for (name, vectors) in embeddings {
            let ids = Self.tokens(tokenizer, name)
            guard let first = ids.first else { throw PromptError.embeddingNameHasNoTokens(name) }
            guard vectors >= 1 else { throw PromptError.embeddingHasNoVectors(name) }
            lookup[first, default: []].append((ids, name, vectors))
        }
        for key in lookup.keys {
            // A stable sort, as A1111's `sorted(..., reverse=True)` is.
            lookup[key] = lookup[key]!.enumerated().sorted {
                $0.element.ids.count != $1.element.ids.count ? $0.element.ids.count > $1.element.ids.count : $0.offset < $1.offset
            }.map(\.element)
        }
        self.lookup = lookup
    }

    /// The names among `candidates` whose token sequence occurs in `prompt`'s text tokens: the
    /// embeddings worth loading before chunking (unused files are never opened).
    public static func embeddingNames(in prompt: String, candidates: [String], tokenizer: CLIPTokenizer,
                                      emphasis: PromptEmphasis) throws -> [String] {
        let texts = emphasis == .a1111 ? try PromptAttention.parse(prompt).map(\.text) : [prompt]
        let promptTokens = texts.map { tokens(tokenizer, $0) }
        return candidates.filter { name in
            let ids = tokens(tokenizer, name)
            guard !ids.isEmpty else { return false }
            return promptTokens.contains { t in
                t.count >= ids.count && (0...(t.count - ids.count)).contains { t[$0..<$0 + ids.count].elementsEqual(ids) }
            }
        }
    }

    /// `prompt` cut into windows for `emphasis`.
    public func parse(_ prompt: String, emphasis: PromptEmphasis) throws -> ParsedPrompt {
        switch emphasis {
        case .a1111: return try chunked(prompt)
        case .none: return plain(prompt)
        }
    }

    /// A1111's chunking of the emphasis runs of `prompt`.
    private func chunked(_ prompt: String) throws -> ParsedPrompt {
        let runs = try PromptAttention.parse(prompt)
        var chunks: [PromptChunk] = []
        var tokens: [Int] = [], weights: [Double] = [], placements: [EmbeddingPlacement] = []
        var tokenCount = 0, lastComma = -1

        func closeChunk(isLast: Bool = false) {
            tokenCount += isLast ? tokens.count : chunkLength
            let padding = chunkLength - tokens.count
            var ids = [tokenizer.bosTokenID] + tokens + repeatElement(tokenizer.eosTokenID, count: max(padding, 0))
                + [tokenizer.eosTokenID]
            if tokenizer.padTokenID != tokenizer.eosTokenID, let end = ids.firstIndex(of: tokenizer.eosTokenID) {
                for k in (end + 1)..<ids.count { ids[k] = tokenizer.padTokenID }
            }
            let w = [1.0] + weights + repeatElement(1.0, count: max(padding, 0)) + [1.0]
            chunks.append(PromptChunk(ids: ids, weights: w,
                                      embeddings: placements.map { var p = $0; p.position += 1; return p }))
            tokens = []
            weights = []
            placements = []
            lastComma = -1
        }

        for run in runs {
            if run.isBreak {
                closeChunk()
                continue
            }
            let runTokens = Self.tokens(tokenizer, run.text)
            var position = 0
            while position < runTokens.count {
                let token = runTokens[position]
                if token == commaID {
                    lastComma = tokens.count
                } else if tokens.count == chunkLength && lastComma != -1
                            && tokens.count - lastComma <= Self.commaBacktrack {
                    // Word wrap: what follows the last comma starts the next chunk.
                    let cut = lastComma + 1
                    let movedTokens = Array(tokens[cut...]), movedWeights = Array(weights[cut...])
                    let movedPlacements = placements.filter { $0.position >= cut }
                        .map { var p = $0; p.position -= cut; return p }
                    tokens.removeSubrange(cut...)
                    weights.removeSubrange(cut...)
                    placements.removeAll { $0.position >= cut }
                    closeChunk()
                    tokens = movedTokens
                    weights = movedWeights
                    placements = movedPlacements
                }
                if tokens.count == chunkLength { closeChunk() }

                guard let embedding = embedding(at: position, in: runTokens) else {
                    tokens.append(token)
                    weights.append(run.weight)
                    position += 1
                    continue
                }
                if tokens.count + embedding.vectors > chunkLength { closeChunk() }
                placements.append(EmbeddingPlacement(name: embedding.name, position: tokens.count,
                                                     vectors: 0..<embedding.vectors))
                tokens += repeatElement(0, count: embedding.vectors)
                weights += repeatElement(run.weight, count: embedding.vectors)
                position += embedding.ids.count
            }
        }
        if !tokens.isEmpty || chunks.isEmpty { closeChunk(isLast: true) }
        return ParsedPrompt(runs: runs, chunks: chunks, tokenCount: tokenCount)
    }

    /// `--emphasis none`: the literal text in one window, as `CLIPTokenizer.callAsFunction` gives it,
    /// with embeddings expanded in place before the cut to `maxLength`.
    private func plain(_ prompt: String) -> ParsedPrompt {
        let text = Self.tokens(tokenizer, prompt)
        var ids = [tokenizer.bosTokenID], placements: [EmbeddingPlacement] = []
        var position = 0
        while position < text.count {
            if let embedding = embedding(at: position, in: text) {
                placements.append(EmbeddingPlacement(name: embedding.name, position: ids.count, vectors: 0..<embedding.vectors))
                ids += repeatElement(0, count: embedding.vectors)
                position += embedding.ids.count
            } else {
                ids.append(text[position])
                position += 1
            }
        }
        ids.append(tokenizer.eosTokenID)
        let count = ids.count
        let n = tokenizer.maxLength
        if ids.count > n {
            ids.removeLast(ids.count - (n - 1))
            ids.append(tokenizer.eosTokenID)
            placements = placements.compactMap { p in
                let kept = min(p.vectors.count, n - 1 - p.position)
                return kept > 0 ? EmbeddingPlacement(name: p.name, position: p.position, vectors: 0..<kept) : nil
            }
        } else {
            ids += repeatElement(tokenizer.padTokenID, count: n - ids.count)
        }
        return ParsedPrompt(runs: [PromptAttention.Run(prompt, 1)],
                            chunks: [PromptChunk(ids: ids, weights: Array(repeating: 1, count: n), embeddings: placements)],
                            tokenCount: count)
    }

    /// The embedding whose name's tokens start at `position`, longest first.
    private func embedding(at position: Int, in tokens: [Int]) -> (ids: [Int], name: String, vectors: Int)? {
        guard let candidates = lookup[tokens[position]] else { return nil }
        return candidates.first { c in
            position + c.ids.count <= tokens.count && tokens[position..<position + c.ids.count].elementsEqual(c.ids)
        }
    }

    /// The text's tokens without BOS and EOS (`tokenizer(text, add_special_tokens=False)`).
    static func tokens(_ tokenizer: CLIPTokenizer, _ text: String) -> [Int] {
        Array(tokenizer.encode(text).dropFirst().dropLast())
    }
}

/// Prompts or embedding names the chunker cannot use.
public enum PromptError: Error, CustomStringConvertible, Equatable {
    case embeddingNameHasNoTokens(String)
    case embeddingHasNoVectors(String)

    public var description: String {
        switch self {
        case .embeddingNameHasNoTokens(let name):
            return "embedding name \(String(reflecting: name)) has no tokens and cannot be written in a prompt; rename its file"
        case .embeddingHasNoVectors(let name):
            return "embedding \(String(reflecting: name)) has no vectors"
        }
    }
}
