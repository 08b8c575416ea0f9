import Foundation
import Tensors
import Weights
import XCTest

/// Paths of the committed reference fixtures (see tools/reference/).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func model(_ name: String) -> URL { root.appendingPathComponent("models/\(name)") }

    static func golden(_ model: String, _ file: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: root.appendingPathComponent("golden/\(model)/\(file)"))
    }
}

/// max|a − b| ≤ tolerance · max|b|, the parity criterion for float tensors.
func assertParity(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-4, _ what: String,
                  file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, what, file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let diff = actual.maxAbsDifference(expected), scale = expected.maxAbs
    XCTAssertLessThanOrEqual(diff, tolerance * scale,
                             "\(what): max|a-b| = \(diff), max|b| = \(scale), ratio \(diff / max(scale, .leastNonzeroMagnitude))",
                             file: file, line: line)
}
