import Foundation
import Imaging
import Tensors
import Weights
import XCTest

/// The `panorama` executable run as a user runs it.
final class CLITests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let tinyModel = fixtures.appendingPathComponent("models/tiny-pano").path
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("cli-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs the built `panorama` beside the test bundle.
    func run(_ arguments: [String]) throws -> Result {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("panorama")
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = folder
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    var pngFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".png") || $0.contains("partial") }
    }

    /// The command fails, says each of `parts` on stderr, and leaves no new output file.
    func assertFails(_ arguments: [String], saying parts: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let before = pngFiles
        let r = try run(arguments)
        XCTAssertNotEqual(r.status, 0, "expected failure: \(arguments)", file: file, line: line)
        for part in parts {
            XCTAssertTrue(r.stderr.contains(part), "stderr “\(r.stderr)” lacks “\(part)”", file: file, line: line)
        }
        XCTAssertEqual(pngFiles, before, "no output file after a failure", file: file, line: line)
    }

    func testTokenizeJSON() throws {
        let r = try run(["tokenize", "--model", Self.tinyModel, "--json", "a photo", ""])
        XCTAssertEqual(r.status, 0, r.stderr)
        let objects = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        XCTAssertEqual(objects.count, 2)
        XCTAssertEqual((objects[0]["ids"] as! [Int]).count, 77)
        XCTAssertEqual(objects[1]["length"] as? Int, 2)
        XCTAssertEqual(Array((objects[1]["ids"] as! [Int]).prefix(3)), [998, 999, 999])
    }

    /// A single file tokenizes as its configuration folder does, and without --model the bundled
    /// model's full CLIP vocabulary is used.
    func testTokenizeSingleFileCheckpointsAndTheBundledModel() throws {
        let folderModel = Self.fixtures.appendingPathComponent("models/tiny-sd2").path
        let file = Self.fixtures.appendingPathComponent("models/single-file/tiny-sd2.safetensors").path
        let viaFolder = try run(["tokenize", "--model", folderModel, "--json", "a lake at dawn"])
        let viaFile = try run(["tokenize", "--model", file, "--model-config", folderModel, "--json", "a lake at dawn"])
        XCTAssertEqual(viaFolder.status, 0, viaFolder.stderr)
        XCTAssertEqual(viaFile.status, 0, viaFile.stderr)
        XCTAssertEqual(viaFile.stdout, viaFolder.stdout)
        XCTAssertTrue(viaFile.stdout.hasSuffix(", 0, 0], \"length\": 8}]\n"), "SD 2.x pads with \"!\": \(viaFile.stdout)")
        try assertFails(["tokenize", "--model", file, "x"], saying: ["neither SD 1.x (768) nor SD 2.x (1024)", "--model-config"])
        try assertFails(["tokenize", "--model", folderModel, "--model-config", folderModel, "x"],
                        saying: ["applies to a single-file --model"])

        let bundled = try run(["tokenize", "--json", "a photo"])
        XCTAssertEqual(bundled.status, 0, bundled.stderr)
        let ids = (try JSONSerialization.jsonObject(with: Data(bundled.stdout.utf8)) as! [[String: Any]])[0]["ids"] as! [Int]
        XCTAssertEqual(Array(ids.prefix(5)), [49406, 320, 1125, 49407, 49407])
    }

    func testRenderWritesAPNGWithParameters() throws {
        let r = try run(["--model", Self.tinyModel, "--W", "576", "--H", "512", "--prompt", "snowy mountains",
                         "--negative-prompt", "fog", "--steps", "2", "--seed", "42", "--stride", "16",
                         "--latents-out", "l.safetensors", "-o", "out.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("step 2/2"), r.stderr)
        let url = folder.appendingPathComponent("out.png")
        let image = try PNG.read(url)
        XCTAssertEqual([image.width, image.height], [576, 512])
        let text = try PNG.textChunks(of: url)["parameters"]
        XCTAssertEqual(text, "snowy mountains\nNegative prompt: fog\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 576x512, Model hash: ecb206520c, Model: tiny-pano, MultiDiffusion stride: 16")
        let latents = try SafeTensorsFile(url: folder.appendingPathComponent("l.safetensors")).tensor("latents")
        XCTAssertEqual(latents.shape, [1, 4, 64, 72])

        try assertFails(["--model", Self.tinyModel, "--W", "576", "--H", "512", "--prompt", "x", "-o", "out.png"],
                        saying: ["exists", "--overwrite"])
    }

    func testDPMSolverSamplerIsNamedInTheParameters() throws {
        let r = try run(["--model", Self.tinyModel, "--W", "512", "--H", "512", "--prompt", "a lake",
                         "--steps", "3", "--seed", "7", "--scheduler", "dpm++2m-karras", "-o", "dpm.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = try PNG.textChunks(of: folder.appendingPathComponent("dpm.png"))["parameters"]
        XCTAssertEqual(text, "a lake\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 7, Size: 512x512, Model hash: ecb206520c, Model: tiny-pano, MultiDiffusion stride: 8")
    }

    func testSpotDiffusionRendersAndRejectsStride() throws {
        let r = try run(["--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "a lake",
                         "--steps", "2", "--seed", "5", "--spot", "-o", "spot.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = try PNG.textChunks(of: folder.appendingPathComponent("spot.png"))["parameters"]
        XCTAssertEqual(text, "a lake\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 5, Size: 1024x512, Model hash: ecb206520c, Model: tiny-pano, SpotDiffusion: true")
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--spot", "--stride", "16"],
                        saying: ["--stride does not apply with --spot"])
    }

    func testBadSizes() throws {
        try assertFails(["--model", Self.tinyModel, "--W", "1020", "--H", "512", "--prompt", "x"],
                        saying: ["width 1020 is not a multiple of 8"])
        try assertFails(["--model", Self.tinyModel, "--W", "1024", "--H", "256", "--prompt", "x"],
                        saying: ["height 256 is smaller than the model's 512-pixel window"])
    }

    func testCanvasTooLargeForTheMachine() throws {
        try assertFails(["--model", Self.tinyModel, "--W", "800000", "--H", "65536", "--prompt", "x"],
                        saying: ["needs about", "available"])
    }

    func testMissingOrIncompleteModel() throws {
        try assertFails(["--model", folder.appendingPathComponent("nothing").path, "--prompt", "x"],
                        saying: ["model_index.json"])
        let broken = folder.appendingPathComponent("broken")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.tinyModel), to: broken)
        try FileManager.default.removeItem(at: broken.appendingPathComponent("unet"))
        try assertFails(["--model", broken.path, "--prompt", "x"], saying: ["unet"])
    }

    func testSingleFileCheckpointRendersLikeItsFolder() throws {
        let folderModel = Self.fixtures.appendingPathComponent("models/tiny-sd2").path
        let file = Self.fixtures.appendingPathComponent("models/single-file/tiny-sd2.safetensors").path
        let common = ["--W", "512", "--H", "256", "--prompt", "a lake", "--steps", "2", "--seed", "3"]
        XCTAssertEqual(try run(["--model", folderModel] + common + ["-o", "folder.png"]).status, 0)
        let r = try run(["--model", file, "--model-config", folderModel] + common + ["-o", "file.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try PNG.read(folder.appendingPathComponent("file.png"))
        let b = try PNG.read(folder.appendingPathComponent("folder.png"))
        XCTAssertEqual(a.pixels, b.pixels, "the same weights give the same picture")
        XCTAssertTrue(try PNG.textChunks(of: folder.appendingPathComponent("file.png"))["parameters"]!.contains("Model: tiny-sd2"))

        try assertFails(["--model", file, "--prompt", "x"], saying: ["neither SD 1.x (768) nor SD 2.x (1024)", "--model-config"])
        try assertFails(["--model", folderModel, "--model-config", folderModel, "--prompt", "x"],
                        saying: ["apply to a single-file --model"])
        try assertFails(["--model", file, "--prediction-type", "sample", "--prompt", "x"],
                        saying: ["unknown --prediction-type \"sample\""])
        // PyTorch .ckpt files are read by content (PickleModelLoadingTests); a broken one says so.
        let pickle = folder.appendingPathComponent("model.ckpt")
        try Data([0x80, 0x02]).write(to: pickle)
        try assertFails(["--model", pickle.path, "--prompt", "x"], saying: ["model.ckpt", "too short for a weight file"])
        let lone = folder.appendingPathComponent("diffusion_pytorch_model.safetensors")
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("models/tiny-sd2/vae/diffusion_pytorch_model.safetensors"), to: lone)
        try assertFails(["--model", lone.path, "--prompt", "x"], saying: ["not a Stable Diffusion checkpoint in the original single-file layout"])
    }

    func testAnotherVAEIsUsedAndNamed() throws {
        let vae = Self.fixtures.appendingPathComponent("models/single-file/tiny-pano-vae.safetensors").path
        let common = ["--model", Self.tinyModel, "--W", "512", "--H", "512", "--prompt", "a lake", "--steps", "2", "--seed", "4"]
        XCTAssertEqual(try run(common + ["-o", "own.png"]).status, 0)
        let r = try run(common + ["--vae", vae, "-o", "vae.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try PNG.read(folder.appendingPathComponent("vae.png")).pixels,
                       try PNG.read(folder.appendingPathComponent("own.png")).pixels, "the same VAE weights")
        XCTAssertTrue(try PNG.textChunks(of: folder.appendingPathComponent("vae.png"))["parameters"]!
            .contains("Model hash: ecb206520c, Model: tiny-pano, VAE: tiny-pano-vae.safetensors"))
        try assertFails(common + ["--vae", folder.appendingPathComponent("missing.safetensors").path], saying: ["missing.safetensors"])
    }

    func testUnknownSchedulerAndPreset() throws {
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--scheduler", "lms"],
                        saying: ["unknown scheduler \"lms\"", "ddim, dpm++2m, dpm++2m-karras, euler, euler-a, lcm, tcd"])
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--scheduler", "dpm++2m", "--eta", "0.5"],
                        saying: ["--eta applies to the ddim and tcd samplers only"])
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--preset", "nope"],
                        saying: ["unknown preset \"nope\"", "wrap-360"])
    }

    func testBadLatentsIn() throws {
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--W", "512", "--H", "512",
                         "--latents-in", "absent.safetensors"], saying: ["absent.safetensors"])
        let wrong = folder.appendingPathComponent("wrong.safetensors")
        try SafeTensorsWriter.write([(name: "latents", tensor: Tensor(zeros: [1, 4, 8, 8]))], dtype: .f32, to: wrong)
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--W", "512", "--H", "512",
                         "--latents-in", wrong.path], saying: ["[1, 4, 8, 8]", "[1, 4, 64, 64]"])
        let garbage = folder.appendingPathComponent("garbage.safetensors")
        try Data("not a tensor file at all".utf8).write(to: garbage)
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "--W", "512", "--H", "512",
                         "--latents-in", garbage.path], saying: ["garbage.safetensors"])
    }

    func testUnwritableOutput() throws {
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "-o", "no/such/folder/out.png"],
                        saying: ["does not exist"])
        try assertFails(["--model", Self.tinyModel, "--prompt", "x", "-o", "out.jpg"], saying: [".png"])
    }

    func testPresetsList() throws {
        let r = try run(["presets"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for name in ["sd15", "sd21-base", "panorama-4096x512", "wrap-360"] { XCTAssertTrue(r.stdout.contains(name)) }
    }
}
