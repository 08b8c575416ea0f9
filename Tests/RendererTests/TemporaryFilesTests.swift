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
        let full = try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in .max / 2 }, availableMemory: nil)
        XCTAssertGreaterThan(full, 0)
        XCTAssertEqual(format(settings), .float32)

        settings = base
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in margin + full }, availableMemory: nil), full)
        XCTAssertEqual(format(settings), .float32, "float32 files that just fit stay float32")

        settings = base
        let compact = try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in margin + full - 1 }, availableMemory: nil)
        XCTAssertEqual(format(settings), .bfloat16)
        XCTAssertEqual(2 * compact, full)

        settings = base
        XCTAssertThrowsError(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in margin + compact - 1 }, availableMemory: nil)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("temporary files") && message.contains("TMPDIR"), message)
        }
    }

    func testSmallImagesNeedNoDisk() throws {
        let (pipeline, base) = try setUp(memoryLimit: 256 << 20)
        var settings = base
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in 0 }, availableMemory: nil), 0)
        XCTAssertEqual(settings, base)
        settings.decodeMethod = .whole
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, freeDisk: { _ in 0 }, availableMemory: nil), 0)
    }

    func testMapsStayInMemoryWhenTheyFit() throws {
        let (pipeline, base) = try setUp(memoryLimit: 0)
        var everything = base
        let files = try pipeline.fitTemporaryFiles(&everything, encoding: true, freeDisk: { _ in .max / 2 }, availableMemory: nil)
        let need = files + pipeline.estimatedMemory(base)

        var settings = base
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in 0 }, availableMemory: 2 * need), 0)
        guard case .tiled(let tiling) = settings.decodeMethod else { return XCTFail("not tiled") }
        XCTAssertEqual(tiling.memoryLimit, .max, "every map in memory")

        settings = base
        XCTAssertEqual(try pipeline.fitTemporaryFiles(&settings, encoding: true, freeDisk: { _ in .max / 2 },
                                                      availableMemory: 2 * need - 2), files, "too little memory: files")
        XCTAssertEqual(settings, base)
    }
}
