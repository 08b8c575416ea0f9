import Models
import Renderer
import Tensors
import XCTest

/// The tiled VAE's temporary files are sized before any work: float32 when they fit the free
/// disk, bfloat16 when only those fit, and a clear error when neither does.
final class TemporaryFilesTests: XCTestCase {
    private func setUp(memoryLimit: Int) throws -> (PanoramaPipeline, PanoramaSettings) {
        let folder = PanoramaParityTests.fixtures.appendingPathComponent("models/tiny-pano")
        let pipeline = PanoramaPipeline(model: try StableDiffusionModel(folder: folder))
        var settings = PanoramaSettings(prompt: "a lake", width: 192, height: 64)
        settings.decodeMethod = .tiled(VAETiling(memoryLimit: memoryLimit))
        return (pipeline, settings)
    }

    private func format(_ settings: PanoramaSettings) -> CanvasStore.FileFormat? {
        if case .tiled(let tiling) = settings.decodeMethod { return tiling.fileFormat }
        return nil
    }

    func testFileFormatFollowsTheFreeDisk() throws {
        let (pipeline, base) = try setUp(memoryLimit: 0)
        let margin = 1 << 30
        var settings = base
        let full = try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in .max / 2 })
        XCTAssertGreaterThan(full, 0)
        XCTAssertEqual(format(settings), .float32)

        settings = base
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in margin + full }), full)
        XCTAssertEqual(format(settings), .float32, "float32 files that just fit stay float32")

        settings = base
        let compact = try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in margin + full - 1 })
        XCTAssertEqual(format(settings), .bfloat16)
        XCTAssertEqual(2 * compact, full)

        settings = base
        XCTAssertThrowsError(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in margin + compact - 1 })) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("temporary files") && message.contains("TMPDIR"), message)
        }
    }

    func testSmallImagesNeedNoDisk() throws {
        let (pipeline, base) = try setUp(memoryLimit: 256 << 20)
        var settings = base
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in 0 }), 0)
        XCTAssertEqual(settings, base)
        settings.decodeMethod = .whole
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, freeDisk: { _ in 0 }), 0)
    }
}
