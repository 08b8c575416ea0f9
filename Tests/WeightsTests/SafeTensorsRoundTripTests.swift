import Foundation
import Tensors
import Weights
import XCTest

final class SafeTensorsRoundTripTests: XCTestCase {
    /// Deterministic pseudo-random values in [-scale, scale).
    private func values(_ count: Int, seed: UInt64, scale: Float = 4) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    func testFloat32RoundTripIsExact() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("f32.safetensors")
        let a = Tensor(shape: [2, 3, 4], data: values(24, seed: 1))
        let b = Tensor(shape: [5], data: [0, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude])
        let scalar = Tensor(shape: [], data: [42])
        let empty = Tensor(shape: [0, 3], data: [])
        try SafeTensorsWriter.write([("a", a), ("b", b), ("scalar", scalar), ("empty", empty)], dtype: .f32, to: url)

        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.names, ["a", "b", "empty", "scalar"])
        XCTAssertEqual(try file.tensor("a"), a)
        XCTAssertEqual(try file.tensor("b").data.map(\.bitPattern), b.data.map(\.bitPattern))
        XCTAssertEqual(try file.tensor("scalar"), scalar)
        XCTAssertEqual(try file.tensor("empty"), empty)
        XCTAssertEqual(file.info("a")?.dtype, .f32)
        XCTAssertEqual(file.info("a")?.shape, [2, 3, 4])
        XCTAssertEqual(file.info("a")?.byteRange.count, 96)
        XCTAssertNil(file.info("missing"))
    }

    func testFloat16RoundTrip() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("f16.safetensors")
        // Exactly representable in binary16: small integers, dyadic fractions, extremes, subnormals.
        let exact: [Float] = [0, -0.0, 1, -1, 0.5, 0.25, 1.5, -2.75, 1024, 65504, -65504, 0.000061035156,
                              Float(Float16.leastNonzeroMagnitude), 3.0 / 1024, .infinity, -.infinity]
        let other = values(1000, seed: 2)
        try SafeTensorsWriter.write([("exact", Tensor(shape: [exact.count], data: exact)),
                                     ("other", Tensor(shape: [10, 100], data: other))], dtype: .f16, to: url)
        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.info("other")?.dtype, .f16)
        XCTAssertEqual(try file.tensor("exact").data.map(\.bitPattern), exact.map(\.bitPattern))
        let back = try file.tensor("other")
        XCTAssertEqual(back.shape, [10, 100])
        for (x, y) in zip(other, back.data) {
            XCTAssertEqual(y, x, accuracy: abs(x) * 1e-3 + 1e-7)
            XCTAssertEqual(y, Float(Float16(x)), "round to nearest even, as Float16(_:)")
        }
    }

    func testBFloat16RoundTrip() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("bf16.safetensors")
        // At most 8 significant bits: exactly representable in bfloat16.
        let exact: [Float] = [0, -0.0, 1, -1, 0.5, 3, -96, 1.0078125, Float(bitPattern: 0x7F7F_0000), .infinity,
                              Float(bitPattern: 0x0001_0000)]
        let other = values(1000, seed: 3, scale: 100)
        try SafeTensorsWriter.write([("exact", Tensor(shape: [exact.count], data: exact)),
                                     ("other", Tensor(shape: [1000], data: other))], dtype: .bf16, to: url)
        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.info("exact")?.dtype, .bf16)
        XCTAssertEqual(try file.tensor("exact").data.map(\.bitPattern), exact.map(\.bitPattern))
        for (x, y) in zip(other, try file.tensor("other").data) {
            XCTAssertEqual(y, x, accuracy: abs(x) * 4e-3)
        }
    }

    func testBFloat16RoundsToNearestEvenAndKeepsNaN() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("bf16.safetensors")
        let tieDown = Float(bitPattern: 0x3F80_8000)   // halfway, even below: stays 0x3F80
        let tieUp = Float(bitPattern: 0x3F81_8000)     // halfway, odd below: goes to 0x3F82
        let above = Float(bitPattern: 0x3F80_8001)     // just above halfway: rounds up
        try SafeTensorsWriter.write([("x", Tensor(shape: [4], data: [tieDown, tieUp, above, .nan]))],
                                    dtype: .bf16, to: url)
        let back = try SafeTensorsFile(url: url).tensor("x").data
        XCTAssertEqual(back[0].bitPattern, 0x3F80_0000)
        XCTAssertEqual(back[1].bitPattern, 0x3F82_0000)
        XCTAssertEqual(back[2].bitPattern, 0x3F81_0000)
        XCTAssertTrue(back[3].isNaN)
    }

    /// Every binary16 bit pattern decodes exactly as Swift's Float16 does (the reader uses bit tricks).
    func testEveryHalfBitPatternDecodesExactly() throws {
        let dir = try makeTemporaryDirectory(self)
        var data: [UInt8] = []
        for bits in 0...UInt16.max { data.append(UInt8(bits & 0xFF)); data.append(UInt8(bits >> 8)) }
        let header = #"{"all":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}}"#
        let url = try writeBytes(rawSafetensors(header: header, data: data), to: dir.appendingPathComponent("h.safetensors"))
        let decoded = try SafeTensorsFile(url: url).tensor("all").data
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = decoded[Int(bits)]
            if expected.isNaN {
                XCTAssertTrue(got.isNaN, "pattern \(bits)")
            } else if got.bitPattern != expected.bitPattern {
                XCTFail("pattern \(String(bits, radix: 16)): \(got) vs \(expected)")
                return
            }
        }
    }

    /// The writer's float32 → binary16 rounding matches Swift's Float16(_:) (round to nearest even)
    /// over every exponent: overflow to inf, ties, subnormals, underflow to zero.
    func testHalfEncodingMatchesFloat16OverAllExponents() throws {
        let dir = try makeTemporaryDirectory(self)
        var state: UInt64 = 12345
        var inputs: [Float] = (0..<200_000).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(bitPattern: UInt32(truncatingIfNeeded: state >> 32))
        }
        // Exact ties and boundaries.
        inputs += [65504, 65519.99, 65520, 65536, 1e9, 0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 0x1.8p-24,
                   0x1.ffcp-15, 0x1.ffep-15, 1 + 0x1p-11, 1 + 0x1.8p-10, -0x1p-14, .nan, -.infinity]
        let url = dir.appendingPathComponent("h.safetensors")
        try SafeTensorsWriter.write([("x", Tensor(shape: [inputs.count], data: inputs))], dtype: .f16, to: url)
        let back = try SafeTensorsFile(url: url).tensor("x").data
        for (x, y) in zip(inputs, back) {
            let expected = Float(Float16(x))
            if expected.isNaN {
                XCTAssertTrue(y.isNaN)
            } else if y.bitPattern != expected.bitPattern {
                XCTFail("\(x) (\(String(x.bitPattern, radix: 16))): wrote \(y), Float16 gives \(expected)")
                return
            }
        }
    }

    func testOtherDTypesConvertToFloat() throws {
        let dir = try makeTemporaryDirectory(self)
        var data: [UInt8] = []
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        append((2.5 as Double).bitPattern); append((-1.0 as Double).bitPattern)   // F64 [0, 16)
        append(Int64(-7)); append(Int64(49407))                                   // I64 [16, 32)
        append(Int32(-3)); append(Int32(5))                                       // I32 [32, 40)
        append(Int16(-300))                                                       // I16 [40, 42)
        append(Int8(-5)); append(UInt8(200)); append(UInt8(1)); append(UInt8(0))  // I8, U8, BOOL x2 [42, 46)
        let header = """
        {"__metadata__":{"format":"pt","note":"hand made"},
         "f64":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},
         "i64":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},
         "i32":{"dtype":"I32","shape":[1,2],"data_offsets":[32,40]},
         "i16":{"dtype":"I16","shape":[1],"data_offsets":[40,42]},
         "i8":{"dtype":"I8","shape":[1],"data_offsets":[42,43]},
         "u8":{"dtype":"U8","shape":[1],"data_offsets":[43,44]},
         "bool":{"dtype":"BOOL","shape":[2],"data_offsets":[44,46]}}
        """
        let url = try writeBytes(rawSafetensors(header: header, data: data), to: dir.appendingPathComponent("m.safetensors"))
        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "hand made"])
        XCTAssertEqual(try file.tensor("f64").data, [2.5, -1])
        XCTAssertEqual(try file.tensor("i64").data, [-7, 49407])
        XCTAssertEqual(try file.tensor("i32"), Tensor(shape: [1, 2], data: [-3, 5]))
        XCTAssertEqual(try file.tensor("i16").data, [-300])
        XCTAssertEqual(try file.tensor("i8").data, [-5])
        XCTAssertEqual(try file.tensor("u8").data, [200])
        XCTAssertEqual(try file.tensor("bool").data, [1, 0])
        XCTAssertEqual(try file.integers("i64"), [-7, 49407])
        XCTAssertEqual(try file.integers("i32"), [-3, 5])
        assertThrowsMessage(try file.integers("f64"), contains: [url.path, "\"f64\"", "F64", "integer"])
        assertThrowsMessage(try file.tensor("nope"), contains: ["\"nope\"", url.path])
    }

    func testIntegerPayloadsMetadataKeyOrderAndAlignment() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("mixed.safetensors")
        let ids = [49406, 320, 1125, 49407]
        try SafeTensorsWriter.write([
            (name: "z_half", payload: .float(Tensor(shape: [3], data: [1, 2, 3]), .f16)),
            (name: "ids", payload: .int64(shape: [1, 4], values: ids)),
            (name: "a_float", payload: .float(Tensor(shape: [1], data: [0.5]), .f32)),
            (name: "small", payload: .int32(shape: [2], values: [7, -8])),
        ], metadata: ["format": "pt", "quote\"d": "back\\slash"], to: url)

        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.metadata, ["format": "pt", "quote\"d": "back\\slash"])
        XCTAssertEqual(try file.integers("ids"), ids)
        XCTAssertEqual(try file.integers("small"), [7, -8])
        XCTAssertEqual(try file.tensor("z_half").data, [1, 2, 3])
        XCTAssertEqual(try file.tensor("a_float").data, [0.5])
        for name in file.names {
            let info = try XCTUnwrap(file.info(name))
            XCTAssertEqual(info.byteRange.lowerBound % info.dtype.size, 0, "\(name) is aligned")
        }

        // Header: length a multiple of 8 (space padded), keys in the given order.
        let bytes = try [UInt8](Data(contentsOf: url))
        let length = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(length % 8, 0)
        let header = String(decoding: bytes[8..<(8 + length)], as: UTF8.self)
        let order = ["z_half", "ids", "a_float", "small"].map { header.range(of: "\"\($0)\"")!.lowerBound }
        XCTAssertEqual(order, order.sorted())
    }

    func testWriterReplacesAtomicallyAndLeavesNoTemporaryFiles() throws {
        let dir = try makeTemporaryDirectory(self)
        let url = dir.appendingPathComponent("w.safetensors")
        try SafeTensorsWriter.write([("x", Tensor(shape: [1], data: [1]))], dtype: .f32, to: url)
        try SafeTensorsWriter.write([("y", Tensor(shape: [2], data: [2, 3]))], dtype: .f32, to: url)
        XCTAssertEqual(try SafeTensorsFile(url: url).names, ["y"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["w.safetensors"])

        let missingDir = dir.appendingPathComponent("no/such/dir/out.safetensors")
        assertThrowsMessage(try SafeTensorsWriter.write([("x", Tensor(shape: [1], data: [1]))], dtype: .f32,
                                                        to: missingDir),
                            contains: [missingDir.path, "could not write"])
        assertThrowsMessage(try SafeTensorsWriter.write([("x", Tensor(shape: [1], data: [1])),
                                                         ("x", Tensor(shape: [1], data: [2]))], dtype: .f32, to: url),
                            contains: ["\"x\" is given twice"])
        XCTAssertEqual(try SafeTensorsFile(url: url).names, ["y"], "a failed write leaves the old file")
        assertThrowsMessage(try SafeTensorsWriter.write([(name: "ids", payload: .int64(shape: [3], values: [1]))],
                                                        to: url),
                            contains: ["\"ids\"", "shape [3]"])
    }

    func testReadsReferenceTinyUNet() throws {
        let url = try SharedData.require(SharedData.tinySD.appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))
        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.names.count, 304)
        XCTAssertEqual(file.metadata["format"], "pt")
        let conv = try file.tensor("conv_in.weight")
        XCTAssertEqual(conv.shape, [32, 4, 3, 3])
        // Values read with Python's safetensors from the same file.
        XCTAssertEqual(conv.data.first, 0.03823169320821762)
        XCTAssertEqual(conv.data.last, 0.02969670295715332)
        XCTAssertEqual(conv.data.reduce(0.0) { $0 + Double($1) }, -4.483317663019989, accuracy: 1e-9)
        let bias = try file.tensor("conv_in.bias")
        XCTAssertEqual(bias.data.reduce(0.0) { $0 + Double($1) }, 0.40895115211606026, accuracy: 1e-9)
        let toK = try file.tensor("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight")
        XCTAssertEqual(toK.shape, [64, 32])
        XCTAssertEqual(toK.data.last, -0.091257743537426)
        for name in file.names {
            XCTAssertTrue(try file.tensor(name).data.allSatisfy(\.isFinite), name)
        }
    }
}
