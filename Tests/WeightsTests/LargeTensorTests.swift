import Foundation
import Tensors
import Weights
import XCTest

/// Tensors large enough to be converted in parallel chunks come back exactly, including the
/// chunk boundaries and the ragged last chunk.
final class LargeTensorTests: XCTestCase {
    func testChunkedHalfAndBFloat16Conversion() throws {
        let folder = try makeTemporaryDirectory(self)
        let n = (1 << 21) * 2 + 12_345
        // Small integers and halves are exact in both 16-bit formats.
        let values = (0..<n).map { Float(($0 % 511) - 255) / 2 }
        let tensor = Tensor(shape: [n], data: values)
        for dtype in [StorageType.f16, .bf16] {
            let url = folder.appendingPathComponent("big-\(dtype.rawValue).safetensors")
            try SafeTensorsWriter.write([(name: "w", tensor: tensor)], dtype: dtype, to: url)
            XCTAssertEqual(try SafeTensorsFile(url: url).tensor("w").data, values, "\(dtype)")
        }
    }
}
