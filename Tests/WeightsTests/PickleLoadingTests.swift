import Foundation
import Tensors
import Weights
import XCTest

/// PyTorch `torch.save` files (written by tools/reference/make_pickle_fixtures.py) load through
/// `SafeTensorsFile.open` exactly like their safetensors twins, and hostile ones are refused
/// without anything being run.
final class PickleLoadingTests: XCTestCase {
    static func fixture(_ name: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/pickle/\(name)")
    }

    /// Every tensor of `pt`: the same names, dtypes, shapes and stored bytes as the twin's, and the
    /// same float32 values (integers too, through `integers`).
    func assertSameTensors(_ pt: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let torch = try SafeTensorsFile.open(Self.fixture(pt))
        let twin = try SafeTensorsFile.open(Self.fixture("tensors.safetensors"))
        XCTAssertEqual(torch.format, .pytorch, file: file, line: line)
        XCTAssertEqual(twin.format, .safetensors, file: file, line: line)
        XCTAssertEqual(torch.names, twin.names, pt, file: file, line: line)
        XCTAssertEqual(torch.names.count, 20, file: file, line: line)
        for name in twin.names {
            let a = try XCTUnwrap(torch.info(name)), b = try XCTUnwrap(twin.info(name))
            XCTAssertEqual(a.dtype, b.dtype, "\(pt) \(name)", file: file, line: line)
            XCTAssertEqual(a.shape, b.shape, "\(pt) \(name)", file: file, line: line)
            let bytesA = try torch.withRawBytes(of: name) { Array($0) }
            let bytesB = try twin.withRawBytes(of: name) { Array($0) }
            XCTAssertEqual(bytesA, bytesB, "\(pt) \(name): stored bytes", file: file, line: line)
            XCTAssertEqual(try torch.tensor(name).data, try twin.tensor(name).data, "\(pt) \(name)", file: file, line: line)
            if !b.dtype.isFloatingPoint {
                XCTAssertEqual(try torch.integers(name), try twin.integers(name), "\(pt) \(name)", file: file, line: line)
            }
        }
    }

    func testTensorsMatchTheirSafetensorsTwin() throws {
        try assertSameTensors("tensors.pt")
    }

    func testPickleProtocols4And5() throws {
        // FRAME, SHORT_BINUNICODE, MEMOIZE and STACK_GLOBAL instead of protocol 2's opcodes.
        try assertSameTensors("tensors-p4.pt")
        try assertSameTensors("tensors-p5.pt")
    }

    func testZip64Archive() throws {
        try assertSameTensors("tensors-zip64.pt")
    }

    func testModuleStateDictWithMetadataAttribute() throws {
        // state_dict() is an OrderedDict with a `_metadata` attribute, set by BUILD: not a tensor name.
        let torch = try SafeTensorsFile.open(Self.fixture("module-state-dict.pt"))
        let twin = try SafeTensorsFile.open(Self.fixture("module-state-dict.safetensors"))
        XCTAssertEqual(torch.names, ["0.bias", "0.weight", "1.bias", "1.weight"])
        XCTAssertEqual(torch.names, twin.names)
        for name in twin.names {
            XCTAssertEqual(try torch.withRawBytes(of: name) { Array($0) }, try twin.withRawBytes(of: name) { Array($0) }, name)
        }
        XCTAssertTrue(torch.metadata.isEmpty, "\(torch.metadata)")
    }

    func testLayoutDetails() throws {
        let file = try SafeTensorsFile.open(Self.fixture("tensors.pt"))
        // Values spot-checked against what torch.arange / expand give.
        XCTAssertEqual(try file.tensor("expanded").data, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
        XCTAssertEqual(try file.tensor("nested.list.0").data, [1, 1])
        XCTAssertEqual(try file.integers("dtypes.i64"), [-(1 << 40), -1, 0, 7])
        XCTAssertEqual(try file.integers("dtypes.i32"), [-5, 6, 1 << 30, -(1 << 31)])
        XCTAssertEqual(file.info("scalar")?.shape, [])
        XCTAssertEqual(file.info("empty")?.shape, [0, 3])
        // A storage offset and a shared storage are byte ranges of one storage entry.
        let whole = try XCTUnwrap(file.info("shared_whole")), part = try XCTUnwrap(file.info("shared_part"))
        XCTAssertEqual(part.byteRange.lowerBound, whole.byteRange.lowerBound + 16)
        XCTAssertEqual(file.info("offset")?.byteRange.count, 20)
        // Transposed: a 3x5 storage read as 5x3 with strides (1, 5), gathered into row-major order.
        let transposed = try file.tensor("transposed")
        XCTAssertEqual(transposed.shape, [5, 3])
        XCTAssertEqual(file.info("transposed")?.byteRange.count, 60)
        // Scalars become metadata; non-tensor containers vanish.
        XCTAssertEqual(file.metadata["global_step"], "1")
        XCTAssertEqual(file.metadata["name"], "fixture")
        XCTAssertEqual(file.metadata["lr"], "0.5")
        XCTAssertEqual(file.metadata["flag"], "True")
        XCTAssertEqual(file.metadata["nested.list.1"], "3")
    }

    func testEmbeddingsFlattenAsA1111ReadsThem() throws {
        let plain = try SafeTensorsFile.open(Self.fixture("embedding.pt"))
        let paramDict = try SafeTensorsFile.open(Self.fixture("embedding-paramdict.pt"))
        XCTAssertEqual(plain.names, ["string_to_param.*"])
        XCTAssertEqual(paramDict.names, ["string_to_param.*"], "a ParameterDict's tensors take its own name")
        XCTAssertEqual(plain.info("string_to_param.*")?.shape, [2, 32])
        XCTAssertEqual(try plain.tensor("string_to_param.*").data, try paramDict.tensor("string_to_param.*").data)
        XCTAssertEqual(plain.metadata["string_to_token.*"], "265")
        XCTAssertEqual(plain.metadata["name"], "tiny-emb")
    }

    func testFormatIsToldByContentNotExtension() throws {
        let dir = try makeTemporaryDirectory(self)
        let disguised = dir.appendingPathComponent("weights.safetensors")
        try FileManager.default.copyItem(at: Self.fixture("tensors.pt"), to: disguised)
        XCTAssertEqual(try SafeTensorsFile.open(disguised).format, .pytorch)
        let other = dir.appendingPathComponent("weights.ckpt")
        try FileManager.default.copyItem(at: Self.fixture("tensors.safetensors"), to: other)
        XCTAssertEqual(try SafeTensorsFile.open(other).format, .safetensors)
        // A safetensors header of 640 bytes begins 0x80 0x02, like a pickle: still safetensors.
        let padded = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"
        let header = padded + String(repeating: " ", count: 640 - padded.utf8.count)
        let lookalike = try writeBytes(rawSafetensors(header: header, data: [0, 0, 0x80, 0x3F]),
                                       to: dir.appendingPathComponent("lookalike.safetensors"))
        let opened = try SafeTensorsFile.open(lookalike)
        XCTAssertEqual(opened.format, .safetensors)
        XCTAssertEqual(try opened.tensor("t").data, [1])
        // The plain initializer stays safetensors-only.
        assertThrowsMessage(try SafeTensorsFile(url: disguised), contains: ["header length"])
    }

    func testDiffusersFolderReadsBinWeightsWhenNoSafetensors() throws {
        let dir = try makeTemporaryDirectory(self)
        let unet = dir.appendingPathComponent("unet")
        try FileManager.default.createDirectory(at: unet, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.fixture("tiny-sd2-bin/unet/diffusion_pytorch_model.bin"),
                                         to: unet.appendingPathComponent("diffusion_pytorch_model.bin"))
        let weights = try DiffusersFolder.weights(in: unet, label: "unet")
        XCTAssertEqual(weights.files.first?.format, .pytorch)
        XCTAssertTrue(weights.contains("conv_in.weight"))
        // A safetensors file beside it wins, as in diffusers.
        try FileManager.default.copyItem(at: Self.fixture("tensors.safetensors"),
                                         to: unet.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(try DiffusersFolder.weights(in: unet, label: "unet").files.first?.format, .safetensors)
    }

    func testShardedBinWeights() throws {
        // transformers' pytorch_model.bin.index.json over two .bin shards.
        let dir = try makeTemporaryDirectory(self)
        try FileManager.default.copyItem(at: Self.fixture("tensors.pt"), to: dir.appendingPathComponent("pytorch_model-00001-of-00002.bin"))
        try FileManager.default.copyItem(at: Self.fixture("embedding.pt"), to: dir.appendingPathComponent("pytorch_model-00002-of-00002.bin"))
        let names = try SafeTensorsFile.open(Self.fixture("tensors.pt")).names
        let map = (names.map { "\"\($0)\": \"pytorch_model-00001-of-00002.bin\"" }
                   + ["\"string_to_param.*\": \"pytorch_model-00002-of-00002.bin\""]).joined(separator: ", ")
        try Data("{\"weight_map\": {\(map)}}".utf8).write(to: dir.appendingPathComponent("pytorch_model.bin.index.json"))
        let weights = try DiffusersFolder.weights(in: dir, label: "text_encoder")
        XCTAssertEqual(weights.files.count, 2)
        XCTAssertEqual(weights.names.count, 21)
        XCTAssertEqual(try weights.tensor("string_to_param.*").shape, [2, 32])
    }

    // MARK: - Refusals

    func testMaliciousPicklesAreRefusedByNameAndNothingRuns() throws {
        let cases = [("os-system", "posix.system"), ("subprocess", "commands.Popen"), ("eval", "__builtin__.eval"),
                     ("exec", "builtins.exec"), ("after-tensor", "posix.system")]
        for (name, global) in cases {
            let marker = "/tmp/panorama-pickle-pwned-\(name)"
            try? FileManager.default.removeItem(atPath: marker)
            let url = Self.fixture("evil-\(name).pt")
            XCTAssertThrowsError(try SafeTensorsFile.open(url), name) { error in
                XCTAssertEqual(error as? WeightsError, .forbiddenGlobal(path: url.path, global: global), name)
                XCTAssertTrue("\(error)".contains("refuses the global \(global)"), "\(error)")
                XCTAssertTrue("\(error)".contains("nothing was imported or run"), "\(error)")
            }
            // Give a spawned process (had one been spawned) time to create its marker.
            usleep(50_000)
            XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "\(name): the payload ran")
        }
    }

    func testLegacyFormatIsRefusedWithAdvice() throws {
        assertThrowsMessage(try SafeTensorsFile.open(Self.fixture("legacy.pt")),
                            contains: ["legacy format of PyTorch before 1.6", "save it again"])
    }

    func testCompressedArchiveIsRefused() throws {
        assertThrowsMessage(try SafeTensorsFile.open(Self.fixture("compressed.pt")),
                            contains: ["compressed (deflate)", "only stored (uncompressed) entries"])
    }

    func testCheckpointWithLightningCallbackLoads() throws {
        // SD 1.x .ckpt files key a callback's state by PyTorch Lightning's ModelCheckpoint class.
        let file = try SafeTensorsFile.open(Self.fixture("tiny-sd1.ckpt"))
        XCTAssertEqual(file.metadata["global_step"], "1")
        XCTAssertEqual(file.metadata["pytorch-lightning_version"], "1.4.2")
        XCTAssertTrue(file.contains("callbacks.pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint.best_model_score"))
        XCTAssertTrue(file.names.contains { $0.hasPrefix("state_dict.model.diffusion_model.") })
    }
}
