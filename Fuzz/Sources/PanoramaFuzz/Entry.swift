import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One fuzz target: a name (PANORAMA_FUZZ_TARGET) and a body that must either accept its input or
/// refuse it by throwing; a trap, a sanitizer report, a leak past libFuzzer's limits or a hang is a
/// finding.
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    let body: @Sendable (Data) throws -> Void
}

let targets: [FuzzTarget] = [
    FuzzTarget(name: "tensors", summary: "SafeTensorsFile.open: safetensors header and table, PyTorch zip + pickle; every tensor read",
               body: fuzzTensorFile),
    FuzzTarget(name: "checkpoint", summary: "single-file checkpoint key mapping and architecture from a shapes map (JSON)",
               body: fuzzCheckpointKeys),
    FuzzTarget(name: "adapters", summary: "LoRA and textual-inversion loading (safetensors or .pt), LoRA merge into tiny-sd1",
               body: fuzzAdapters),
    FuzzTarget(name: "image", summary: "ImageFile.read(data:) (PNG, JPEG, WebP, orientation) and PNG.textChunks(data:)",
               body: fuzzImage),
    FuzzTarget(name: "configs", summary: "model configs (UNet, VAE, tiny VAE, CLIP text, scheduler), model_index.json; models and schedules built from them",
               body: fuzzConfigs),
    FuzzTarget(name: "presets", summary: "presets/NAME.json as the CLI decodes it (Preset, the CLI's own source)",
               body: fuzzPresets),
    FuzzTarget(name: "prompt", summary: "A1111 prompt syntax: PromptAttention, ExtraNetworkTags, PromptChunker, CLIP tokenizer on arbitrary UTF-8",
               body: fuzzPrompt),
    FuzzTarget(name: "tokenizer-files", summary: "tokenizer folder: vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json",
               body: fuzzTokenizerFiles),
    FuzzTarget(name: "infotext", summary: "PNG Info: Infotext(parsing:), a1111Parameters, recalledSettings",
               body: fuzzInfotext),
    FuzzTarget(name: "request", summary: "server request bodies: JSONValue, then GenerationRequest (txt2img and img2img, regions)",
               body: fuzzRequest),
]

nonisolated(unsafe) var selected: FuzzTarget?
/// Inputs accepted and refused so far (libFuzzer prints its own figures; these go to -print_final_stats users).
nonisolated(unsafe) var accepted = 0
nonisolated(unsafe) var refused = 0

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let name = ProcessInfo.processInfo.environment["PANORAMA_FUZZ_TARGET"] ?? ""
    guard let target = targets.first(where: { $0.name == name }) else {
        var text = "PANORAMA_FUZZ_TARGET must name a target; the targets are:\n"
        for t in targets { text += "  \(t.name): \(t.summary)\n" }
        FileHandle.standardError.write(text.data(using: .utf8)!)
        exit(2)
    }
    selected = target
    // Fixtures read once (tokenizer, tiny model weights) are found from the repository root.
    Fixtures.prepare()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let data = Data(bytes: bytes, count: size)
    do {
        try selected!.body(data)
        accepted += 1
    } catch {
        // A refusal must say something: an empty message is a finding too.
        let message = "\(error)"
        precondition(!message.isEmpty, "an input was refused with an empty error message")
        refused += 1
    }
    return 0
}
