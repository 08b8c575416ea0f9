import Tensors
import XCTest

/// `CanvasStore` keeps a map's values exactly (float32, in memory or in a file), or rounded to
/// bfloat16 in a file, and overlays share their base map's storage.
final class CanvasStoreTests: XCTestCase {
    private func sample(_ shape: [Int], seed: UInt64) -> Tensor {
        var g = TorchGenerator(seed: seed)
        return g.randn(shape) * 3
    }

    /// bfloat16 rounding (to nearest, ties to even) of every value, as float32.
    private func roundedToBFloat16(_ t: Tensor) -> [Float] {
        t.data.map { v in
            let bits = v.bitPattern
            let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
            return Float(bitPattern: rounded)
        }
    }

    func testRectanglesRoundTripInMemoryAndInFiles() throws {
        let map = sample([1, 5, 9, 13], seed: 1)
        for limit in [Int.max, 0] {
            let store = try CanvasStore(map, memoryLimit: limit)
            XCTAssertEqual(store.isFileBacked, limit == 0)
            XCTAssertEqual(try store.tensor().data, map.data)
            let part = try store.read(rows: 2..<7, columns: 3..<11)
            XCTAssertEqual(part.data, map.cropped(rows: 2..<7, columns: 3..<11).data)
            // Columns past the right edge wrap around to the left one.
            let wrapped = try store.read(rows: 0..<9, columns: 10..<16, wrap: true)
            let expected = Tensor.concatenate([map.cropped(rows: 0..<9, columns: 10..<13),
                                               map.cropped(rows: 0..<9, columns: 0..<3)], dimension: 3)
            XCTAssertEqual(wrapped.data, expected.data)
        }
    }

    func testBFloat16FilesRoundEveryValueToNearest() throws {
        let map = sample([1, 6, 7, 10], seed: 2)
        let store = try CanvasStore(map, memoryLimit: 0, fileFormat: .bfloat16)
        XCTAssertEqual(store.format, .bfloat16)
        XCTAssertEqual(try store.tensor().data, roundedToBFloat16(map))
        XCTAssertNotEqual(try store.tensor().data, map.data)
        // Maps that stay in memory stay float32.
        let inMemory = try CanvasStore(map, memoryLimit: .max, fileFormat: .bfloat16)
        XCTAssertEqual(inMemory.format, .float32)
        XCTAssertEqual(try inMemory.tensor().data, map.data)
    }

    func testBFloat16FilesTakeHalfTheDisk() throws {
        CanvasStore.resetPeakFileBytes()
        let base = CanvasStore.peakFileBytes
        do {
            let a = try CanvasStore(channels: 8, height: 16, width: 32, memoryLimit: 0, fileFormat: .bfloat16)
            XCTAssertTrue(a.isFileBacked)
            XCTAssertEqual(CanvasStore.peakFileBytes - base, 8 * 16 * 32 * 2)
            let b = try CanvasStore(channels: 8, height: 16, width: 32, memoryLimit: 0)
            XCTAssertTrue(b.isFileBacked)
            XCTAssertEqual(CanvasStore.peakFileBytes - base, 8 * 16 * 32 * 6)
        }
        CanvasStore.resetPeakFileBytes()
        XCTAssertEqual(CanvasStore.peakFileBytes, base, "the files are gone with their stores")
    }

    /// An overlay of fewer channels lives in its base map's storage: what it writes it reads back,
    /// and pixels it has not written keep the base map's values.
    func testOverlaySharesItsBaseStorage() throws {
        for (limit, format) in [(Int.max, CanvasStore.FileFormat.float32), (0, .float32), (0, .bfloat16)] {
            let base = try CanvasStore(sample([1, 6, 5, 8], seed: 3), memoryLimit: limit, fileFormat: format)
            let before = try base.tensor()
            CanvasStore.resetPeakFileBytes()
            let peak = CanvasStore.peakFileBytes
            let overlay = base.overlay(channels: 4)
            XCTAssertEqual(CanvasStore.peakFileBytes, peak, "an overlay takes no storage of its own")
            XCTAssertEqual(overlay.format, base.format)
            let patch = sample([1, 4, 2, 3], seed: 4)
            try overlay.write(patch, row: 1, column: 2)
            let expected = format == .bfloat16 ? roundedToBFloat16(patch) : patch.data
            XCTAssertEqual(try overlay.read(rows: 1..<3, columns: 2..<5).data, expected)
            // Elsewhere the overlay shows the base map's first channels.
            XCTAssertEqual(try overlay.read(rows: 3..<5, columns: 0..<8).data,
                           before.channels(0..<4).cropped(rows: 3..<5, columns: 0..<8).data)
        }
    }
}
