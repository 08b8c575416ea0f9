import Foundation
import Imaging
import Tensors
import Weights
import XCTest

/// LoRAs from the command line: `--lora PATH:WEIGHT` and `<lora:NAME:WEIGHT>` tags give diffusers'
/// result (tools/reference/make_lora_fixtures.py), and bad LoRAs stop the command.
extension CLITests {
    private var loraFolder: URL { Self.fixtures.appendingPathComponent("lora") }

    private func assertLatents(_ file: String, match golden: String, file path: StaticString = #filePath, line: UInt = #line) throws {
        let latents = try SafeTensorsFile(url: folder.appendingPathComponent(file)).tensor("latents")
        let expected = try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("golden/lora/\(golden).safetensors"))
            .tensor("final_latent")
        let diff = latents.maxAbsDifference(expected)
        XCTAssertLessThanOrEqual(diff, 1e-3 * expected.maxAbs, "\(file): max diff \(diff)", file: path, line: line)
    }

    func testLoRAByOptionAndByTagMatchDiffusers() throws {
        let base = ["--model", Self.tinyModel, "--W", "768", "--H", "512", "--steps", "6", "--seed", "1234"]
        let byOption = try run(base + ["--prompt", "snowy mountains at sunset",
                                       "--lora", loraFolder.appendingPathComponent("kohya-locon.safetensors").path + ":0.7",
                                       "--latents-out", "option.safetensors", "-o", "option.png"])
        XCTAssertEqual(byOption.status, 0, byOption.stderr)
        XCTAssertTrue(byOption.stderr.contains("with LoRA kohya-locon (0.7)"), byOption.stderr)
        try assertLatents("option.safetensors", match: "kohya_0.7")
        // the PNG records the LoRA as A1111 would (a tag in the prompt, its short hash), and
        // --from-png renders it again with the file found by name
        let parameters = try XCTUnwrap(try PNG.textChunks(of: folder.appendingPathComponent("option.png"))["parameters"])
        XCTAssertTrue(parameters.hasPrefix("snowy mountains at sunset<lora:kohya-locon:0.7>\n"), parameters)
        XCTAssertTrue(parameters.contains(#"Lora hashes: "kohya-locon: "#), parameters)
        let again = try run(["--model", Self.tinyModel, "--from-png", "option.png", "--lora-dir", loraFolder.path,
                             "--latents-out", "again.safetensors", "-o", "again.png"])
        XCTAssertEqual(again.status, 0, again.stderr)
        try assertLatents("again.safetensors", match: "kohya_0.7")

        // two tags, one with separate text encoder and UNet weights, found in --lora-dir
        let byTags = try run(base + ["--prompt", "snowy mountains <lora:kohya-locon:0.7> at sunset<lora:peft-attn:1.3:1.3>",
                                     "--lora-dir", loraFolder.path, "--latents-out", "tags.safetensors", "-o", "tags.png"])
        XCTAssertEqual(byTags.status, 0, byTags.stderr)
        try assertLatents("tags.safetensors", match: "kohya_0.7_peft_1.3")
        let split = try run(base + ["--prompt", "snowy mountains at sunset", "--negative-prompt", "<lora:kohya-locon:0.5:1.2>",
                                    "--lora-dir", loraFolder.path, "--latents-out", "split.safetensors", "-o", "split.png"])
        XCTAssertEqual(split.status, 0, split.stderr)
        XCTAssertTrue(split.stderr.contains("kohya-locon (text encoder 0.5, UNet 1.2)"), split.stderr)
        try assertLatents("split.safetensors", match: "kohya_te0.5_unet1.2")
    }

    func testBadLoRAsStopTheCommand() throws {
        let base = ["--model", Self.tinyModel, "--W", "512", "--H", "512", "--steps", "1"]
        try assertFails(base + ["--prompt", "sky <lora:nothing-here:1>", "--lora-dir", loraFolder.path],
                        saying: ["no LoRA named \"nothing-here\"", "kohya-locon", "peft-attn"])
        try assertFails(base + ["--prompt", "sky", "--lora", "/absent/x.safetensors"], saying: ["/absent/x.safetensors", "no such file"])
        try assertFails(base + ["--prompt", "sky <hypernet:foo:1>"], saying: ["hypernet", "only <lora:NAME:WEIGHT>"])
        try assertFails(base + ["--prompt", "sky <lora:kohya-locon:strong>", "--lora-dir", loraFolder.path],
                        saying: ["\"strong\" is not a number"])
        // a LoRA for another model: the tiny SD 2.x fixture's LoRA-shaped file on tiny-pano
        let other = folder.appendingPathComponent("other.safetensors")
        let q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
        try SafeTensorsWriter.write([(name: q + ".lora_down.weight", tensor: Tensor(repeating: 0.1, shape: [4, 1024])),
                                     (name: q + ".lora_up.weight", tensor: Tensor(repeating: 0.1, shape: [64, 4]))],
                                    dtype: .f32, to: other)
        try assertFails(base + ["--prompt", "sky", "--lora", other.path], saying: ["other.safetensors", "another architecture"])
    }
}

extension CLITests {
    /// An embedding the prompt calls is named with its hash (`TI hashes`), and `Emphasis: none` is
    /// written and read back by --from-png.
    func testEmbeddingHashesAndEmphasisAreRecorded() throws {
        let embeddings = Self.fixtures.appendingPathComponent("golden/prompts/embeddings")
        let r = try run(["--model", Self.tinyModel, "--W", "512", "--H", "512", "--steps", "1", "--seed", "3",
                         "--prompt", "a tinyemb lake", "--negative-prompt", "neg", "--embeddings-dir", embeddings.path,
                         "-o", "ti.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let parameters = try XCTUnwrap(try PNG.textChunks(of: folder.appendingPathComponent("ti.png"))["parameters"])
        XCTAssertTrue(parameters.contains(#"TI hashes: "tinyemb: "#) && parameters.contains(", neg: "), parameters)
        XCTAssertFalse(parameters.contains("Emphasis"), parameters)

        let literal = try run(["--model", Self.tinyModel, "--W", "512", "--H", "512", "--steps", "1", "--seed", "3",
                               "--prompt", "a (literal:1.5) lake", "--emphasis", "none", "-o", "none.png"])
        XCTAssertEqual(literal.status, 0, literal.stderr)
        let none = try XCTUnwrap(try PNG.textChunks(of: folder.appendingPathComponent("none.png"))["parameters"])
        XCTAssertTrue(none.contains("Emphasis: none"), none)
        let again = try run(["--model", Self.tinyModel, "--from-png", "none.png", "-o", "again.png"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try PNG.read(folder.appendingPathComponent("again.png")).pixels,
                       try PNG.read(folder.appendingPathComponent("none.png")).pixels)
        XCTAssertTrue(try XCTUnwrap(try PNG.textChunks(of: folder.appendingPathComponent("again.png"))["parameters"])
            .contains("Emphasis: none"))
    }
}
