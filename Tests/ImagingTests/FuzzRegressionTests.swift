import Foundation
import Imaging
import XCTest

/// Inputs found by the fuzz targets (Fuzz/, scripts/fuzz.sh) that trapped or hung before their
/// fix; each must now be refused with an error naming the file. The inputs are in Tests/Fixtures/fuzz.
final class FuzzRegressionTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fuzz")

    /// Found by the `image` target (a timeout): a 69-byte PNG whose tEXt chunk claims 0x737FFFF0
    /// bytes made libpng allocate and clear 1.9 GB before finding the file too short. The decoder
    /// now skips the ancillary chunks it does not use unread, so the file is refused as truncated.
    func testHugeTextChunkIsRefusedWithoutAllocating() throws {
        let url = Self.fixtures.appendingPathComponent("png-text-chunk-claims-1.9gb.png")
        let data = try Data(contentsOf: url)
        let start = Date()
        XCTAssertThrowsError(try ImageFile.read(data: data, name: "upload.png")) { error in
            guard case let ImagingError.read(path, reason)? = error as? ImagingError else {
                return XCTFail("unexpected error \(error)")
            }
            XCTAssertEqual(path, "upload.png")
            XCTAssertFalse(reason.isEmpty)
        }
        XCTAssertThrowsError(try ImageFile.read(url)) { error in
            XCTAssertTrue("\(error)".contains(url.lastPathComponent), "\(error)")
        }
        // Its text chunks, read without libpng, are refused as truncated.
        XCTAssertThrowsError(try PNG.textChunks(data: data)) { error in
            XCTAssertTrue("\(error)".contains("past the end of the file"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }
}
