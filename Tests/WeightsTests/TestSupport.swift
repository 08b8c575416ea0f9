import Foundation
import XCTest
import Weights

/// A fresh temporary directory, removed when the test ends.
func makeTemporaryDirectory(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("WeightsTests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// Bytes of a safetensors file built by hand: length field (or `lengthField` to lie), header, data.
func rawSafetensors(header: String, data: [UInt8], lengthField: UInt64? = nil) -> [UInt8] {
    let headerBytes = Array(header.utf8)
    var bytes: [UInt8] = []
    var length = (lengthField ?? UInt64(headerBytes.count)).littleEndian
    withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
    return bytes + headerBytes + data
}

@discardableResult
func writeBytes(_ bytes: [UInt8], to url: URL) throws -> URL {
    try Data(bytes).write(to: url)
    return url
}

/// Asserts that `body` throws a `WeightsError` whose message contains every fragment.
func assertThrowsMessage<T>(_ body: @autoclosure () throws -> T, contains fragments: [String],
                            file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch let error as WeightsError {
        let message = error.description
        for fragment in fragments where !message.contains(fragment) {
            XCTFail("message \"\(message)\" lacks \"\(fragment)\"", file: file, line: line)
        }
    } catch {
        XCTFail("expected a WeightsError, got \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// Shared reference data beside the repository (`../shared`), found from this file's location:
/// the repository root is two levels above Tests/WeightsTests.
enum SharedData {
    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared")
    }

    static var tinySD: URL { root.appendingPathComponent("reference/tiny-sd") }
    static var sd15Layout: URL { root.appendingPathComponent("data/sd15-layout") }

    /// `url` if it exists, else skips the test.
    static func require(_ url: URL) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("reference data not present at \(url.path)")
        }
        return url
    }
}
