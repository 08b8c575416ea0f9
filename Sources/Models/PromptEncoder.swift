import Foundation
import Tensors
import Tokenization
import Weights

/// A prompt encoded for the UNet: [1, 77 · chunks, hidden] text embeddings.
public struct EncodedPrompt: Sendable {
    /// The text embeddings, chunk after chunk along the token axis.
    public var embeddings: Tensor
    /// How the text was cut and weighted.
    public var parsed: ParsedPrompt
    /// The embedding files the prompt used (for PNG Info's `TI hashes`), in order of first use.
    public var embeddingFiles: [(name: String, url: URL)]
    /// Number of 77-token windows in `embeddings`.
    public var chunkCount: Int { embeddings.shape[1] / max(parsed.chunks.first?.ids.count ?? 1, 1) }
}

/// Turns prompts into text embeddings: AUTOMATIC1111's syntax and long prompts (`.a1111`) or the literal
/// text in one window as diffusers does (`.none`), with textual-inversion embeddings in both.
///
/// Under `.a1111` each 77-token chunk is encoded on its own (clip skip per chunk) and weighted by A1111's
/// "Original" emphasis: the hidden states are multiplied by their tokens' weights, then the chunk is
/// rescaled so its mean is what it was before (`m0 = z.mean(); z *= w; z *= m0 / z.mean()`). Prompts that
/// run together in one UNet batch (prompt and negative prompt, region prompts) are padded to the same
/// number of chunks with the empty prompt's chunk, as A1111's "pad prompt/negative prompt to be same
/// length" does.
public struct PromptEncoder: Sendable {
    /// The model's tokenizer and text encoder.
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    /// How prompt text is read.
    public let emphasis: PromptEmphasis
    /// The embeddings prompts may call by name.
    public let library: TextualInversionLibrary
    /// Layers before the last whose output is used (diffusers' `clip_skip`), for every chunk.
    public let clipSkip: Int

    /// An encoder for `model`'s tokenizer and text encoder.
    public init(model: StableDiffusionModel, emphasis: PromptEmphasis = .a1111,
                embeddings library: TextualInversionLibrary = .empty, clipSkip: Int = 0) {
        self.tokenizer = model.tokenizer
        self.textEncoder = model.textEncoder
        self.emphasis = emphasis
        self.library = library
        self.clipSkip = clipSkip
    }

    /// The embeddings `prompt` calls, loaded and checked against the text encoder, and the prompt cut
    /// into windows with them. Extra-network tags (`<lora:NAME:W>`) are removed first, as A1111
    /// removes them: they choose weights when the model loads and are not text.
    public func parse(_ prompt: String) throws -> (ParsedPrompt, [String: TextualInversionEmbedding]) {
        let prompt = ExtraNetworkTags.extract(prompt).text
        let names = try PromptChunker.embeddingNames(in: prompt, candidates: library.names, tokenizer: tokenizer,
                                                     emphasis: emphasis)
        var loaded: [String: TextualInversionEmbedding] = [:]
        let width = textEncoder.config.hiddenSize, limit = tokenizer.maxLength - 2
        for name in names {
            let e = try library.load(name)
            guard e.width == width else {
                throw EmbeddingError.wrongWidth(name: name, path: e.url.path, width: e.width, expected: width)
            }
            guard e.count <= limit else {
                throw EmbeddingError.tooManyVectors(name: name, path: e.url.path, count: e.count, limit: limit)
            }
            loaded[name] = e
        }
        let chunker = try PromptChunker(tokenizer: tokenizer, embeddings: names.map { ($0, loaded[$0]!.count) })
        return (try chunker.parse(prompt, emphasis: emphasis), loaded)
    }

    /// Encodes `prompts`, each to its own number of chunks.
    public func encode(_ prompts: [String]) throws -> [EncodedPrompt] {
        let parsed = try prompts.map(parse)
        // All chunks of all prompts in one text-encoder batch.
        var ids: [[Int]] = [], vectors: [CLIPTextModel.TokenVector] = []
        for (parsedPrompt, loaded) in parsed {
            for chunk in parsedPrompt.chunks {
                for placement in chunk.embeddings {
                    let e = loaded[placement.name]!
                    for (k, v) in placement.vectors.enumerated() {
                        vectors.append(.init(sequence: ids.count, position: placement.position + k, values: e.vector(v)))
                    }
                }
                ids.append(chunk.ids)
            }
        }
        let hidden = try textEncoder(ids, clipSkip: clipSkip, vectors: vectors)
        var next = 0
        return try parsed.map { parsedPrompt, loaded in
            let chunks = try parsedPrompt.chunks.map { chunk -> Tensor in
                defer { next += 1 }
                return try Self.emphasized(hidden.batch(next), weights: chunk.weights)
            }
            let files = parsedPrompt.embeddingsUsed.map { (name: $0, url: loaded[$0]!.url) }
            return EncodedPrompt(embeddings: Tensor.concatenate(chunks, dimension: 1), parsed: parsedPrompt,
                                 embeddingFiles: files)
        }
    }

    /// Encodes `prompts` to embeddings of one length: each padded with the empty prompt's chunk to the
    /// largest chunk count among them.
    public func encodeEqualLength(_ prompts: [String]) throws -> [EncodedPrompt] {
        var encoded = try encode(prompts)
        let most = encoded.map(\.chunkCount).max() ?? 1
        guard encoded.contains(where: { $0.chunkCount < most }) else { return encoded }
        let empty = try encode([""])[0].embeddings
        for k in encoded.indices where encoded[k].chunkCount < most {
            encoded[k].embeddings = Tensor.concatenate(
                [encoded[k].embeddings] + Array(repeating: empty, count: most - encoded[k].chunkCount), dimension: 1)
        }
        return encoded
    }

    /// A1111's "Original" emphasis on one chunk [1, tokens, hidden]: z · w, rescaled to the old mean.
    static func emphasized(_ z: Tensor, weights: [Double]) throws -> Tensor {
        // Weights of 1 leave the chunk exactly as it is (the rescale factor is exactly 1 there too).
        guard weights.contains(where: { $0 != 1 }) else { return z }
        let d = z.shape[2]
        let w = weights.map(Float.init)
        if let bad = weights.first(where: { !Float($0).isFinite }) {
            throw ModelError.invalidInput("prompt weight \(bad) is too large for float32 (the text embeddings would become infinite); use a weight such as (text:1.5)")
        }
        let before = Self.mean(z.data)
        var scaled = z.data
        for (i, wi) in w.enumerated() {
            for j in (i * d)..<((i + 1) * d) { scaled[j] *= wi }
        }
        let after = Self.mean(scaled)
        // A mean of exactly 0 after weighting (A1111 would divide by it) leaves the weighted chunk as is.
        if after != 0 {
            let factor = before / after
            for j in scaled.indices { scaled[j] *= factor }
        }
        return Tensor(shape: z.shape, data: scaled)
    }

    private static func mean(_ x: [Float]) -> Float {
        var sum = 0.0
        for v in x { sum += Double(v) }
        return Float(sum / Double(max(x.count, 1)))
    }
}
