import Foundation
import Tokenization
import XCTest

/// Checks the Swift CLIP tokenizer against ids produced by transformers' CLIPTokenizer
/// (tools/reference/make_tokenizer_fixtures.py → Tests/Fixtures/tokenizer/expected.json).
final class CLIPTokenizerTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Expected: Decodable {
        struct Case: Decodable {
            let prompt: String
            let ids: [Int]
            let length: Int
        }
        struct Setting: Decodable {
            let vocab: String
            let pad_token: String
            let pad_token_id: Int
            let bos_token_id: Int
            let eos_token_id: Int
            let cases: [Case]
        }
        struct Folder: Decodable {
            let path: String
            let pad_token_id: Int
            let bos_token_id: Int
            let eos_token_id: Int
            let cases: [Case]
        }
        let max_length: Int
        let settings: [Setting]
        let folders: [Folder]
    }

    static func expected() throws -> Expected {
        let url = fixtures.appendingPathComponent("tokenizer/expected.json")
        return try JSONDecoder().decode(Expected.self, from: Data(contentsOf: url))
    }

    func check(_ tokenizer: CLIPTokenizer, _ cases: [Expected.Case], _ label: String) {
        for c in cases {
            let result = tokenizer(c.prompt)
            XCTAssertEqual(result.ids, c.ids, "\(label): ids of \(String(reflecting: c.prompt))")
            XCTAssertEqual(result.length, c.length, "\(label): length of \(String(reflecting: c.prompt))")
            let full = tokenizer.encode(c.prompt)
            XCTAssertEqual(full.count, c.length, "\(label): encode count of \(String(reflecting: c.prompt))")
            XCTAssertEqual(Array(full.prefix(c.ids.count - 1)), Array(c.ids.prefix(min(full.count, c.ids.count - 1))),
                           "\(label): encode prefix of \(String(reflecting: c.prompt))")
        }
    }

    func testMatchesTransformersForVocabulariesAndPadTokens() throws {
        let expected = try Self.expected()
        XCTAssertEqual(expected.settings.count, 3)
        for setting in expected.settings {
            let dir = Self.fixtures.appendingPathComponent(setting.vocab)
            let tokenizer = try CLIPTokenizer(vocabulary: dir.appendingPathComponent("vocab.json"),
                                              merges: dir.appendingPathComponent("merges.txt"),
                                              padToken: setting.pad_token, maxLength: expected.max_length)
            let label = "\(setting.vocab) pad \(setting.pad_token)"
            XCTAssertEqual(tokenizer.maxLength, 77)
            XCTAssertEqual(tokenizer.padTokenID, setting.pad_token_id, label)
            XCTAssertEqual(tokenizer.bosTokenID, setting.bos_token_id, label)
            XCTAssertEqual(tokenizer.eosTokenID, setting.eos_token_id, label)
            XCTAssertGreaterThanOrEqual(setting.cases.count, 40)
            check(tokenizer, setting.cases, label)
        }
    }

    func testMatchesTransformersForDiffusersFolders() throws {
        let expected = try Self.expected()
        XCTAssertEqual(expected.folders.count, 6)
        for folder in expected.folders {
            let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent(folder.path))
            XCTAssertEqual(tokenizer.maxLength, 77, folder.path)
            XCTAssertEqual(tokenizer.padTokenID, folder.pad_token_id, folder.path)
            XCTAssertEqual(tokenizer.bosTokenID, folder.bos_token_id, folder.path)
            XCTAssertEqual(tokenizer.eosTokenID, folder.eos_token_id, folder.path)
            check(tokenizer, folder.cases, folder.path)
        }
    }

    func testConfigPadTokenBangIsIDZero() throws {
        let dir = Self.fixtures.appendingPathComponent("tokenizer/folders/config-pad-bang")
        let tokenizer = try CLIPTokenizer(directory: dir)
        XCTAssertEqual(tokenizer.padTokenID, 0)
        XCTAssertEqual(tokenizer.bosTokenID, 998)
        XCTAssertEqual(tokenizer.eosTokenID, 999)
        let prompt = tokenizer("a")
        XCTAssertEqual(prompt.length, 3)
        XCTAssertEqual(Array(prompt.ids[3...]), Array(repeating: 0, count: 74))
    }

    func testSD1PadAndTruncationKeepsEOS() throws {
        let dir = Self.fixtures.appendingPathComponent("clip-vocab")
        let tokenizer = try CLIPTokenizer(vocabulary: dir.appendingPathComponent("vocab.json"),
                                          merges: dir.appendingPathComponent("merges.txt"))
        XCTAssertEqual(tokenizer.padTokenID, 49407)
        XCTAssertEqual(tokenizer(""), TokenizedPrompt(ids: [49406] + Array(repeating: 49407, count: 76), length: 2))
        let long = tokenizer(String(repeating: "cat ", count: 100))
        XCTAssertEqual(long.length, 102)
        XCTAssertEqual(long.ids.count, 77)
        XCTAssertEqual(long.ids.first, 49406)
        XCTAssertEqual(long.ids.last, 49407)
    }

    func testLoadsFullVocabularyQuickly() throws {
        let dir = Self.fixtures.appendingPathComponent("clip-vocab")
        let start = Date()
        let tokenizer = try CLIPTokenizer(vocabulary: dir.appendingPathComponent("vocab.json"),
                                          merges: dir.appendingPathComponent("merges.txt"))
        let seconds = Date().timeIntervalSince(start)
        print("CLIP vocabulary (49408 tokens, 48894 merges) loaded in \(String(format: "%.3f", seconds)) s")
        XCTAssertLessThan(seconds, 2.0)
        XCTAssertEqual(tokenizer.encode("snowy mountains at sunset"), [49406, 14191, 5873, 536, 3424, 49407])
    }

    func testConcurrentUseIsConsistent() throws {
        let expected = try Self.expected()
        let setting = expected.settings[0]
        let dir = Self.fixtures.appendingPathComponent(setting.vocab)
        let tokenizer = try CLIPTokenizer(vocabulary: dir.appendingPathComponent("vocab.json"),
                                          merges: dir.appendingPathComponent("merges.txt"))
        let cases = setting.cases
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for c in cases.shuffled() where tokenizer(c.prompt).ids != c.ids { failures.add("\(worker): \(c.prompt)") }
        }
        XCTAssertEqual(failures.all, [])
    }

    func testVocabularyWithEscapesAndWhitespaceLoadsTheSame() throws {
        let expected = try Self.expected()
        guard let setting = expected.settings.first(where: { $0.vocab == "tokenizer/tiny" }) else {
            return XCTFail("no tiny setting")
        }
        let dir = try tinyCopy()
        // Re-encode vocab.json with every non-ASCII scalar as \uXXXX (surrogate pairs beyond the BMP), "/" as
        // "\/", and one entry per line: the fast parser must decode it exactly like JSONSerialization.
        let original = try String(contentsOf: dir.appendingPathComponent("vocab.json"), encoding: .utf8)
        var escaped = ""
        for scalar in original.unicodeScalars {
            if scalar == "/" {
                escaped += "\\/"
            } else if scalar.value < 0x80 {
                escaped.unicodeScalars.append(scalar)
            } else {
                for unit in String(scalar).utf16 { escaped += String(format: "\\u%04x", unit) }
            }
        }
        escaped = escaped.replacingOccurrences(of: ", \"", with: ",\n  \"")  // no token contains ", \""
        try escaped.write(to: dir.appendingPathComponent("vocab.json"), atomically: true, encoding: .utf8)
        let tokenizer = try CLIPTokenizer(directory: dir)
        check(tokenizer, setting.cases, "escaped tiny vocab")
    }

    // MARK: errors

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func tinyCopy() throws -> URL {
        let dir = try temporaryDirectory()
        let tiny = Self.fixtures.appendingPathComponent("tokenizer/tiny")
        for name in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: tiny.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        return dir
    }

    func assertError(_ body: () throws -> CLIPTokenizer, mentions fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
        } catch let error as TokenizerError {
            for fragment in fragments {
                XCTAssertTrue(error.description.contains(fragment), "\(error.description) lacks \(fragment)", file: file, line: line)
            }
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    func testMissingVocabularyNamesTheFile() throws {
        let dir = try tinyCopy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("vocab.json"))
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["not found", dir.appendingPathComponent("vocab.json").path])
        assertError({ try CLIPTokenizer(vocabulary: dir.appendingPathComponent("vocab.json"),
                                        merges: dir.appendingPathComponent("merges.txt")) }, mentions: ["vocab.json"])
    }

    func testMissingMergesNamesTheFile() throws {
        let dir = try tinyCopy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("merges.txt"))
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["not found", "merges.txt"])
    }

    func testMalformedMergesNamesTheFileAndLine() throws {
        let dir = try tinyCopy()
        try "#version: 0.2\ni n\nt h e\n".write(to: dir.appendingPathComponent("merges.txt"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["merges.txt", "line 3"])
        try "#version: 0.2\ni n\nzz q\n".write(to: dir.appendingPathComponent("merges.txt"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["merges.txt", "line 3", "\"zz\""])
    }

    func testMalformedVocabularyNamesTheFile() throws {
        let dir = try tinyCopy()
        try "[1, 2, 3]".write(to: dir.appendingPathComponent("vocab.json"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["vocab.json", "malformed"])
        try "{\"a\": \"x\"}".write(to: dir.appendingPathComponent("vocab.json"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["vocab.json", "\"a\""])
        try "{not json".write(to: dir.appendingPathComponent("vocab.json"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["vocab.json", "JSON"])
    }

    func testPadTokenNotInVocabulary() throws {
        let dir = try tinyCopy()
        assertError({ try CLIPTokenizer(vocabulary: dir.appendingPathComponent("vocab.json"),
                                        merges: dir.appendingPathComponent("merges.txt"), padToken: "<pad>") },
                    mentions: ["pad", "\"<pad>\"", "vocab.json"])
        try #"{"pad_token": {"content": "<pad>"}}"#.write(to: dir.appendingPathComponent("tokenizer_config.json"),
                                                         atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["pad", "\"<pad>\"", "vocab.json"])
    }

    func testMalformedConfigurationNamesTheFile() throws {
        let dir = try tinyCopy()
        try "{\"pad_token\": 3}".write(to: dir.appendingPathComponent("special_tokens_map.json"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["special_tokens_map.json", "pad_token"])
        try "nope".write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        assertError({ try CLIPTokenizer(directory: dir) }, mentions: ["tokenizer_config.json"])
    }
}

/// Thread-safe failure collector for the concurrency test.
private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
