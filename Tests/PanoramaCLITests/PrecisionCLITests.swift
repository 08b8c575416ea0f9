import Foundation
import Imaging
import Tensors
import XCTest

extension CLITests {
    func testPrecisionOption() throws {
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--precision", "fp16"],
                        saying: ["unknown --precision \"fp16\"", "fp32, bf16"])
        guard Compute.hasFastBF16 else { return }
        for precision in ["fp32", "bf16"] {
            let r = try run(["--model", Self.tinyModel, "--W", "512", "--H", "512", "--prompt", "snowy mountains",
                             "--steps", "2", "--seed", "3", "--precision", precision, "-o", "\(precision).png"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let fp32 = try PNG.read(folder.appendingPathComponent("fp32.png"))
        let bf16 = try PNG.read(folder.appendingPathComponent("bf16.png"))
        let mad = zip(fp32.pixels, bf16.pixels).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(fp32.pixels.count)
        XCTAssertLessThan(mad, 2, "bf16 and fp32 pictures differ by \(mad) levels on average")
        XCTAssertNotEqual(fp32.pixels, bf16.pixels, "bf16 made no difference: did it run?")
        let text = try PNG.textChunks(of: folder.appendingPathComponent("bf16.png"))["parameters"] ?? ""
        XCTAssertTrue(text.hasSuffix(", Precision: bf16"), text)
        let fp32Text = try PNG.textChunks(of: folder.appendingPathComponent("fp32.png"))["parameters"] ?? ""
        XCTAssertFalse(fp32Text.contains("Precision"), fp32Text)
    }
}
