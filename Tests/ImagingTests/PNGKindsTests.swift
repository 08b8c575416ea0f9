import Foundation
import Imaging
import XCTest

/// Every common PNG kind reads as 8-bit RGB (tools/reference/make_png_fixtures.py writes the
/// files chunk by chunk and the expected pixels; PIL agrees with them).
final class PNGKindsTests: XCTestCase {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/images")

    struct Expected: Decodable {
        let width: Int
        let height: Int
        let pixels: [String: [UInt8]]
    }

    func testEveryKindReadsAsRGB8() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Self.folder.appendingPathComponent("expected.json")))
        XCTAssertEqual(expected.pixels.count, 8)
        for (name, pixels) in expected.pixels.sorted(by: { $0.key < $1.key }) {
            let image = try PNG.read(Self.folder.appendingPathComponent("\(name).png"))
            XCTAssertEqual([image.width, image.height], [expected.width, expected.height], name)
            XCTAssertEqual(image.pixels, pixels, name)
        }
    }

    func testTruncatedFileIsAnErrorNamingIt() {
        let url = Self.folder.appendingPathComponent("truncated.png")
        XCTAssertThrowsError(try PNG.read(url)) { error in
            XCTAssertTrue("\(error)".contains("truncated.png"), "\(error)")
        }
    }
}
