import Foundation
import Tokenization
import XCTest

/// A1111 prompt syntax: emphasis runs and chunks against the Python reference
/// (tools/reference/a1111_prompt.py via make_prompt_fixtures.py → golden/prompts/chunks.json), exactly.
final class PromptChunkerTests: XCTestCase {
    static let fixtures = CLIPTokenizerTests.fixtures

    struct Fixture: Decodable {
        struct Chunk: Decodable {
            let ids: [Int]
            let weights: [[WeightOrCount]]
            let embeddings: [[WeightOrCount]]
        }
        struct Case: Decodable {
            let tokenizer: String
            let prompt: String
            let runs: [[String]]
            let chunks: [Chunk]
        }
        let tokenizers: [String: String]
        let embeddings: [String: Int]
        let cases: [Case]
    }

    /// A JSON array element that is a string or an integer.
    enum WeightOrCount: Decodable {
        case string(String), int(Int)
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .string(try c.decode(String.self)) }
        }
        var string: String? { if case .string(let s) = self { return s }; return nil }
        var int: Int? { if case .int(let i) = self { return i }; return nil }
    }

    static func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: fixtures.appendingPathComponent("golden/prompts/chunks.json")))
    }

    /// A1111's own doctest examples (modules/prompt_parser.py), values as A1111 documents them.
    func testA1111DoctestExamples() throws {
        typealias R = PromptAttention.Run
        XCTAssertEqual(try PromptAttention.parse("normal text"), [R("normal text", 1)])
        XCTAssertEqual(try PromptAttention.parse("an (important) word"), [R("an ", 1), R("important", 1.1), R(" word", 1)])
        XCTAssertEqual(try PromptAttention.parse("(unbalanced"), [R("unbalanced", 1.1)])
        XCTAssertEqual(try PromptAttention.parse("\\(literal\\]"), [R("(literal]", 1)])
        XCTAssertEqual(try PromptAttention.parse("(unnecessary)(parens)"), [R("unnecessaryparens", 1.1)])
        XCTAssertEqual(try PromptAttention.parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."), [
            R("a ", 1), R("house", 1.5730000000000004), R(" ", 1.1), R("on", 1), R(" a ", 1.1), R("hill", 0.55),
            R(", sun, ", 1.1), R("sky", 1.4641000000000006), R(".", 1.1)])
        XCTAssertEqual(try PromptAttention.parse(""), [R("", 1)])
        XCTAssertEqual(try PromptAttention.parse("a BREAK b"), [R("a", 1), R("BREAK", -1), R("b", 1)])
    }

    /// A weight that is not a number is refused, as A1111's float() refuses it.
    func testMalformedWeightIsAnError() {
        for prompt in ["(a:1.2.3)", "(a:.)", "(a:+.)"] {
            XCTAssertThrowsError(try PromptAttention.parse(prompt), prompt) { error in
                XCTAssertTrue("\(error)".contains("is not a number"), "\(error)")
            }
        }
    }

    /// Prompts beyond the length bound are refused quickly; a worst case of nested brackets within it
    /// parses (A1111's quadratic bracket rule, bounded by the length).
    func testPromptLengthIsBounded() throws {
        let long = String(repeating: "a", count: PromptAttention.maximumLength + 1)
        XCTAssertThrowsError(try PromptAttention.parse(long)) { XCTAssertTrue("\($0)".contains("more than")) }
        let nested = String(repeating: "(a", count: PromptAttention.maximumLength / 4)
            + String(repeating: ")", count: PromptAttention.maximumLength / 4)
        let start = Date()
        let runs = try PromptAttention.parse(nested)
        XCTAssertGreaterThan(runs.count, 1)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    func testRunsAndChunksEqualReference() throws {
        let fixture = try Self.fixture()
        var chunkers: [String: PromptChunker] = [:]
        let embeddings = fixture.embeddings.sorted { $0.key < $1.key }.map { (name: $0.key, vectors: $0.value) }
        for (key, path) in fixture.tokenizers {
            let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent(path))
            chunkers[key] = try PromptChunker(tokenizer: tokenizer, embeddings: embeddings)
        }
        var chunkCount = 0, multiChunk = 0, withEmbeddings = 0
        for c in fixture.cases {
            let what = "\(c.tokenizer): \(String(reflecting: c.prompt))"
            let runs = try PromptAttention.parse(c.prompt)
            XCTAssertEqual(runs.map(\.text), c.runs.map { $0[0] }, what)
            XCTAssertEqual(runs.map(\.weight), c.runs.map { Double($0[1])! }, what)

            let parsed = try chunkers[c.tokenizer]!.parse(c.prompt, emphasis: .a1111)
            XCTAssertEqual(parsed.chunks.count, c.chunks.count, what)
            for (k, (mine, expected)) in zip(parsed.chunks, c.chunks).enumerated() {
                XCTAssertEqual(mine.ids, expected.ids, "\(what), chunk \(k) ids")
                let weights = expected.weights.flatMap { pair in
                    repeatElement(Double(pair[0].string!)!, count: pair[1].int!)
                }
                XCTAssertEqual(mine.weights, weights, "\(what), chunk \(k) weights")
                XCTAssertEqual(mine.embeddings.map { [$0.position, $0.vectors.count] },
                               expected.embeddings.map { [$0[0].int!, $0[2].int!] }, "\(what), chunk \(k) embedding slots")
                XCTAssertEqual(mine.embeddings.map(\.name), expected.embeddings.map { $0[1].string! }, what)
                withEmbeddings += expected.embeddings.isEmpty ? 0 : 1
            }
            chunkCount += c.chunks.count
            multiChunk += c.chunks.count > 1 ? 1 : 0
        }
        // The fixture covers what it claims: long prompts, BREAKs and embeddings.
        XCTAssertGreaterThan(fixture.cases.count, 100)
        XCTAssertGreaterThan(multiChunk, 30)
        XCTAssertGreaterThan(withEmbeddings, 10)
        XCTAssertGreaterThan(chunkCount, 200)
    }

    /// `.none` is the tokenizer's own window: same ids as `CLIPTokenizer.callAsFunction`, weights 1.
    func testNoEmphasisIsThePlainTokenizer() throws {
        let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent("models/tiny-sd2/tokenizer"))
        let chunker = try PromptChunker(tokenizer: tokenizer)
        for prompt in ["(a:1.3) b BREAK c", "", String(repeating: "long words ", count: 60), "wow!!"] {
            let parsed = try chunker.parse(prompt, emphasis: .none)
            XCTAssertEqual(parsed.chunks.count, 1)
            XCTAssertEqual(parsed.chunks[0].ids, tokenizer(prompt).ids, prompt)
            XCTAssertEqual(parsed.tokenCount, tokenizer(prompt).length, prompt)
            XCTAssertEqual(parsed.chunks[0].weights, Array(repeating: 1, count: 77))
        }
    }

    /// Under `.none` an embedding takes its slots in place and is cut with the window.
    func testNoEmphasisEmbeddingsAreCutWithTheWindow() throws {
        let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent("models/tiny-pano/tokenizer"))
        let chunker = try PromptChunker(tokenizer: tokenizer, embeddings: [("tinyemb", 4)])
        let short = try chunker.parse("a tinyemb b", emphasis: .none)
        XCTAssertEqual(short.chunks[0].embeddings, [EmbeddingPlacement(name: "tinyemb", position: 2, vectors: 0..<4)])
        XCTAssertEqual(Array(short.chunks[0].ids[2..<6]), [0, 0, 0, 0])
        let cut = try chunker.parse(String(repeating: "a ", count: 73) + "tinyemb", emphasis: .none)
        XCTAssertEqual(cut.chunks[0].embeddings, [EmbeddingPlacement(name: "tinyemb", position: 74, vectors: 0..<2)])
        XCTAssertEqual(cut.chunks[0].ids.last, tokenizer.eosTokenID)
        XCTAssertEqual(short.embeddingsUsed, ["tinyemb"])
    }

    /// Only embeddings whose names occur in the prompt's tokens are worth loading.
    func testEmbeddingNamesInPrompt() throws {
        let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent("models/tiny-pano/tokenizer"))
        let names = ["tinyemb", "neg", "other"]
        XCTAssertEqual(try PromptChunker.embeddingNames(in: "(TinyEmb:1.2), x", candidates: names, tokenizer: tokenizer,
                                                        emphasis: .a1111), ["tinyemb"])
        XCTAssertEqual(try PromptChunker.embeddingNames(in: "a neg b", candidates: names, tokenizer: tokenizer,
                                                        emphasis: .none), ["neg"])
    }
}
