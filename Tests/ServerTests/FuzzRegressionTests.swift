import Foundation
import Server
import XCTest

/// Request bodies found by the `request` fuzz target (Fuzz/, scripts/fuzz.sh) that trapped before
/// their fix; each must now be a 422 naming the field. The inputs are in Tests/Fixtures/fuzz.
final class FuzzRegressionTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fuzz")

    func assertRefused(_ body: Data, field: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let json = try JSONDecoder().decode(JSONValue.self, from: body)
        for img2img in [false, true] {
            XCTAssertThrowsError(try GenerationRequest(json: json, img2img: img2img, limits: SizeLimits()),
                                 file: file, line: line) { error in
                guard let error = error as? APIError else { return XCTFail("unexpected \(error)", file: file, line: line) }
                XCTAssertEqual(error.status, 422, file: file, line: line)
                XCTAssertTrue(error.description.contains(field), error.description, file: file, line: line)
            }
        }
    }

    /// Found by the `request` target: width 108888888888888888 overflowed width × height in the
    /// pixel-limit check (a trap in a checked build; in the -Ounchecked release a wrapped product).
    func testHugeWidthIsRefusedWithoutOverflow() throws {
        try assertRefused(Data(contentsOf: Self.fixtures.appendingPathComponent("request-width-overflows-pixels.json")),
                          field: "width")
        try assertRefused(Data(#"{"width": 4611686018427387904, "height": 4611686018427387904}"#.utf8), field: "width")
    }

    /// The same for n_iter × batch_size.
    func testHugeBatchIsRefusedWithoutOverflow() throws {
        try assertRefused(Data(#"{"n_iter": 4611686018427387904, "batch_size": 8}"#.utf8), field: "n_iter")
    }

    /// Found by the `request` target: a prompt sent as the number 1.01e20 trapped converting it to
    /// Int64 for its text (a string field takes numbers, as pydantic does). It is now read as text.
    func testNumberBeyondInt64AsStringFieldIsRead() throws {
        let body = try Data(contentsOf: Self.fixtures.appendingPathComponent("request-prompt-number-beyond-int64.json"))
        let json = try JSONDecoder().decode(JSONValue.self, from: body)
        do {
            _ = try GenerationRequest(json: json, img2img: false, limits: SizeLimits())
        } catch let error as APIError {
            XCTAssertEqual(error.status, 422, error.description)  // its regions have no prompt
        }
        let huge = try GenerationRequest(json: ["prompt": 1.0111111111111111e20], img2img: false, limits: SizeLimits())
        XCTAssertEqual(huge.prompt, "1.0111111111111111e+20")
        let small = try GenerationRequest(json: ["prompt": 12], img2img: false, limits: SizeLimits())
        XCTAssertEqual(small.prompt, "12")
    }
}
