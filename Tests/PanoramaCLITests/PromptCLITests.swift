import Foundation
import XCTest

/// The command line's prompt options: `tokenize --parse`, `--emphasis`, `--embeddings-dir`.
extension CLITests {
    static var embeddings: String { fixtures.appendingPathComponent("golden/prompts/embeddings").path }
    static var badEmbeddings: String { fixtures.appendingPathComponent("golden/prompts/embeddings-bad").path }

    func testTokenizeParseShowsChunksWeightsAndEmbeddings() throws {
        let plain = try run(["tokenize", "--model", Self.tinyModel, "--json", "(a:1.5) photo"])
        XCTAssertFalse(plain.stdout.contains("chunks"), "plain JSON is unchanged: \(plain.stdout)")

        let r = try run(["tokenize", "--model", Self.tinyModel, "--embeddings-dir", Self.embeddings, "--parse", "--json",
                         "(a:1.5) tinyemb BREAK photo"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let object = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]])[0]
        XCTAssertEqual((object["ids"] as! [Int]).count, 77)
        let chunks = object["chunks"] as! [[String: Any]]
        XCTAssertEqual(chunks.count, 2)
        XCTAssertEqual((chunks[0]["weights"] as! [Double])[1], 1.5)
        let embedding = (chunks[0]["embeddings"] as! [[String: Any]])[0]
        XCTAssertEqual(embedding["name"] as? String, "tinyemb")
        XCTAssertEqual(embedding["vectors"] as? Int, 3)

        let text = try run(["tokenize", "--model", Self.tinyModel, "--embeddings-dir", Self.embeddings, "--parse",
                            "(a:1.5) tinyemb BREAK photo"])
        XCTAssertTrue(text.stdout.contains("2 chunks"), text.stdout)
        XCTAssertTrue(text.stdout.contains("tinyemb (3 vectors"), text.stdout)
        XCTAssertTrue(text.stdout.contains("(a:1.5)"), text.stdout)
        let none = try run(["tokenize", "--model", Self.tinyModel, "--parse", "--emphasis", "none", "(a:1.5) BREAK b"])
        XCTAssertTrue(none.stdout.contains("emphasis none): 1 chunk"), none.stdout)
    }

    /// Without --embeddings-dir, an `embeddings` folder beside the model is searched.
    func testEmbeddingsBesideTheModelAreFound() throws {
        let fm = FileManager.default
        try fm.createSymbolicLink(at: folder.appendingPathComponent("model"), withDestinationURL: URL(fileURLWithPath: Self.tinyModel))
        try fm.createDirectory(at: folder.appendingPathComponent("embeddings"), withIntermediateDirectories: true)
        try fm.copyItem(at: URL(fileURLWithPath: Self.embeddings).appendingPathComponent("neg.safetensors"),
                        to: folder.appendingPathComponent("embeddings/neg.safetensors"))
        let model = folder.appendingPathComponent("model").path
        let r = try run(["tokenize", "--model", model, "--parse", "a neg b"])
        XCTAssertTrue(r.stdout.contains("embeddings: neg (1 vector"), r.stdout + r.stderr)
        let render = try run(["--model", model, "--W", "512", "--H", "512", "--steps", "1", "--prompt", "a neg b", "-o", "n.png"])
        XCTAssertEqual(render.status, 0, render.stderr)
        XCTAssertTrue(render.stderr.contains("embeddings: neg"), render.stderr)
    }

    func testPromptOptionsRefuseBadInput() throws {
        let base = ["--model", Self.tinyModel, "--W", "512", "--H", "512", "--steps", "1", "-o", "out.png"]
        try assertFails(base + ["--prompt", "a wide b", "--embeddings-dir", Self.badEmbeddings],
                        saying: ["embedding \"wide\"", "width 48", "32 wide"])
        try assertFails(base + ["--prompt", "x", "--negative-prompt", "nanvec", "--embeddings-dir", Self.badEmbeddings],
                        saying: ["nanvec.safetensors", "non-finite"])
        try assertFails(base + ["--prompt", "x", "--embeddings-dir", "/nonexistent/embeddings"], saying: ["is not a folder"])
        try assertFails(base + ["--prompt", "x", "--emphasis", "strong"], saying: ["unknown --emphasis \"strong\"", "a1111, none"])
        try assertFails(base + ["--prompt", "(x:1.2.3)"], saying: ["\"1.2.3\"", "not a number"])
    }
}
