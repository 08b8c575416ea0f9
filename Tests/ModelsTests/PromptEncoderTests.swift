import Foundation
import Models
import Tensors
import Tokenization
import Weights
import XCTest

/// Prompt encoding against tools/reference/make_prompt_encoding_fixtures.py (golden/prompts/encode.*):
/// A1111 syntax against the Python reference of A1111's algorithm (long prompts, BREAK, weights, clip
/// skip, empty-chunk padding, SD 2.x padding, embeddings), and textual inversion under `.none` against
/// diffusers' `load_textual_inversion` + `encode_prompt`. Within max|a − b| ≤ 1e-4 · max|b|.
final class PromptEncoderTests: XCTestCase {
    struct Case: Decodable {
        let key: String
        let model: String
        let prompt: String
        let clip_skip: Int
        let emphasis: String
        let pad_to_chunks: Int?
        let chunks: Int
    }
    struct Cases: Decodable { let cases: [Case] }

    static let prompts = Fixtures.root.appendingPathComponent("golden/prompts")
    static let library = TextualInversionLibrary(directories: [prompts.appendingPathComponent("embeddings")])
    nonisolated(unsafe) static var models: [String: StableDiffusionModel] = [:]

    static func model(_ name: String) throws -> StableDiffusionModel {
        if let m = models[name] { return m }
        let m = try StableDiffusionModel(folder: Fixtures.model(name))
        models[name] = m
        return m
    }

    func testEncodingsMatchReferences() throws {
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: Self.prompts.appendingPathComponent("encode.json")))
        let golden = try SafeTensorsFile(url: Self.prompts.appendingPathComponent("encode.safetensors"))
        XCTAssertGreaterThanOrEqual(cases.cases.count, 12)
        for c in cases.cases {
            let encoder = PromptEncoder(model: try Self.model(c.model), emphasis: PromptEmphasis(rawValue: c.emphasis)!,
                                        embeddings: Self.library, clipSkip: c.clip_skip)
            var encoded = try encoder.encode([c.prompt])[0]
            if let chunks = c.pad_to_chunks {
                // Padded as a negative prompt is next to a longer prompt: with empty-prompt chunks.
                let longer = "x" + String(repeating: " BREAK x", count: chunks - 1)
                encoded = try encoder.encodeEqualLength([c.prompt, longer])[0]
            }
            let expected = try golden.tensor(c.key)
            XCTAssertEqual(encoded.embeddings.shape, [1, 77 * c.chunks, encoder.textEncoder.config.hiddenSize], c.key)
            assertParity(encoded.embeddings, expected, "\(c.key) (\(c.emphasis), clip skip \(c.clip_skip))")
        }
    }

    /// A prompt reports the embedding files it used, for the PNG's TI hashes.
    func testEmbeddingFilesUsed() throws {
        let encoder = PromptEncoder(model: try Self.model("tiny-pano"), embeddings: Self.library)
        let encoded = try encoder.encode(["a tinyemb landscape, (neg:1.2) sky BREAK ptstyle, [tinyemb]", "plain"])
        XCTAssertEqual(encoded[0].embeddingFiles.map(\.name), ["tinyemb", "neg", "ptstyle"])
        XCTAssertEqual(encoded[0].embeddingFiles.map(\.url.lastPathComponent),
                       ["tinyemb.safetensors", "neg.safetensors", "ptstyle.safetensors"])
        XCTAssertTrue(encoded[1].embeddingFiles.isEmpty)
    }

    /// The library's loaders read the three formats with their vector counts.
    func testEmbeddingFormats() throws {
        let tiny = try Self.library.load("tinyemb"), neg = try Self.library.load("neg"), pt = try Self.library.load("ptstyle")
        XCTAssertEqual([tiny.count, neg.count, pt.count], [3, 1, 2])
        XCTAssertEqual([tiny.width, neg.width, pt.width], [32, 32, 32])
        XCTAssertEqual([tiny.tensorName, neg.tensorName, pt.tensorName], ["emb_params", "<neg>", "string_to_param.*"])
    }

    /// Broken or foreign embedding files stop the prompts that call them, with the file named; files a
    /// prompt does not call are never opened.
    func testBadEmbeddingsAreRefusedByName() throws {
        let bad = TextualInversionLibrary(directories: [Self.prompts.appendingPathComponent("embeddings-bad")])
        let encoder = PromptEncoder(model: try Self.model("tiny-pano"), embeddings: bad)
        let expectations: [(String, String)] = [
            ("wide", "has vectors of width 48, but this model's text encoder is 32 wide"),
            ("nanvec", "non-finite value"),
            ("sdxl", "an SDXL embedding"),
            ("twotensors", "expected one vector tensor"),
            ("empty", "empty.safetensors"),
        ]
        for (name, message) in expectations {
            XCTAssertThrowsError(try encoder.encode(["a \(name) landscape"]), name) { error in
                XCTAssertTrue("\(error)".contains(message), "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(name), "\(name): the message names the embedding: \(error)")
            }
        }
        XCTAssertNoThrow(try encoder.encode(["a plain landscape"]))
        XCTAssertThrowsError(try bad.load("missing")) { XCTAssertTrue("\($0)".contains("no embedding named \"missing\"")) }
    }

    /// `.none` without embeddings is exactly the model's plain encoding (today's behaviour).
    func testNoEmphasisIsThePlainEncoding() throws {
        let model = try Self.model("tiny-sd2")
        let prompt = "(snow:1.3) BREAK " + String(repeating: "long ", count: 90)
        let encoded = try PromptEncoder(model: model, emphasis: .none).encode([prompt])[0].embeddings
        let plain = try model.encode([prompt])
        XCTAssertEqual(encoded.shape, [1, 77, 48])
        XCTAssertEqual(encoded.maxAbsDifference(plain), 0)
    }
}
