import Foundation
import Imaging
import Models
import Renderer
import Schedulers
import Tokenization
import Weights

/// Reads every tensor of a file the way the loaders do (bounded: the fixtures are small, and a
/// file cannot claim more elements than it has bytes, which the reader checks).
func readAll(_ file: SafeTensorsFile) throws {
    _ = file.metadata
    for name in file.names {
        guard let info = file.info(name) else { continue }
        if info.dtype.isFloatingPoint {
            let t = try file.tensor(name)
            precondition(t.shape == info.shape)
        } else {
            _ = try file.integers(name)
        }
        try file.withRawBytes(of: name) { precondition($0.count == info.count * info.dtype.size) }
    }
}

/// `SafeTensorsFile.open` on the bytes as a file: a safetensors file, or a PyTorch zip archive
/// whose pickle runs on the restricted unpickler.
func fuzzTensorFile(_ data: Data) throws {
    let url = try Fixtures.file(data, name: "input.safetensors")
    try readAll(SafeTensorsFile.open(url))
}

/// Single-file checkpoint key mapping: a checkpoint's table of stored name → shape (JSON: a list of
/// [name, shape] pairs, as Tests/Fixtures/models/single-file/*-shapes.json, or an object), mapped
/// to diffusers' names and read for the architecture.
func fuzzCheckpointKeys(_ data: Data) throws {
    struct NotATable: Error, CustomStringConvertible { var description: String { "not a table of shapes" } }
    var shapes: [String: [Int]] = [:]
    if let map = try? JSONDecoder().decode([String: [Int]].self, from: data) {
        shapes = map
    } else {
        guard let pairs = try JSONSerialization.jsonObject(with: data) as? [[Any]] else { throw NotATable() }
        for pair in pairs {
            guard pair.count == 2, let name = pair[0] as? String, let shape = pair[1] as? [Int] else { throw NotATable() }
            shapes[name] = shape
        }
    }
    let names = try SingleFileCheckpoint.componentNames(shapes, path: "fuzz.safetensors")
    func renamed(_ map: [String: WeightSet.StoredTensor]) -> [String: [Int]] {
        map.mapValues { stored in
            var shape = shapes[stored.name] ?? []
            if let rows = stored.rows, !shape.isEmpty { shape[0] = rows.count }
            return shape
        }
    }
    for prediction in [nil, "epsilon", "v_prediction"] {
        _ = try SingleFileCheckpoint.standardConfigurations(
            unet: renamed(names.unet), vae: renamed(names.vae), textEncoder: renamed(names.text),
            textEncoderLayout: names.textLayout, predictionType: prediction, path: "fuzz.safetensors")
    }
}

/// A LoRA or a textual-inversion embedding from a file (the first byte picks the extension the
/// loaders see), and the LoRA merged into tiny-sd1's weights, with the changed tensors read.
func fuzzAdapters(_ data: Data) throws {
    let ext = ["safetensors", "pt", "bin"][Int(data.first ?? 0) % 3]
    let url = try Fixtures.file(data.dropFirst(), name: "adapter.\(ext)")
    var firstError: Error?
    do {
        let embedding = try TextualInversionEmbedding(url: url)
        for k in 0..<embedding.count { precondition(embedding.vector(k).count == embedding.width) }
    } catch { firstError = error }
    do {
        let lora = try LoRA(url: url)
        let merged = try LoRAMerge.apply([LoRAApplication(lora: lora, textEncoderWeight: 0.7, unetWeight: 1.3)],
                                         unet: Fixtures.unet, textEncoder: Fixtures.textEncoder)
        for set in [merged.unet, merged.textEncoder] {
            for name in set.changedNames.prefix(8) { _ = try set.tensor(name) }
        }
    } catch {
        if let firstError { throw firstError }
    }
}

/// An uploaded image: decoded, and its text chunks read.
func fuzzImage(_ data: Data) throws {
    var refusal: Error?
    do {
        let image = try ImageFile.read(data: data, maxPixels: 1 << 22)
        precondition(image.pixels.count == image.width * image.height * 3)
    } catch { refusal = error }
    do {
        _ = try PNG.textChunks(data: data)
    } catch {
        if refusal != nil { throw error }
    }
}

/// A config file of the kind the first byte picks; when it decodes, the model or schedule is
/// built from it (against tiny-sd1's weights, which mostly will not fit: the point is that sizes
/// are refused before they are used to allocate).
func fuzzConfigs(_ data: Data) throws {
    let kind = Int(data.first ?? 0) % 7
    let json = Data(data.dropFirst())
    switch kind {
    case 0:
        let config = try UNetConfig.decode(json, path: "unet/config.json")
        _ = try UNet2DConditionModel(config: config, weights: Fixtures.unet)
    case 1:
        let config = try AutoencoderKLConfig.decode(json, path: "vae/config.json")
        _ = try AutoencoderKL(config: config, weights: Fixtures.vae)
    case 2:
        let config = try AutoencoderTinyConfig.decode(json, path: "taesd/config.json")
        _ = try AutoencoderTiny(config: config, decoder: Fixtures.taesd, encoder: Fixtures.taesd)
    case 3:
        let config = try CLIPTextConfig.decode(json, path: "text_encoder/config.json")
        _ = try CLIPTextModel(config: config, weights: Fixtures.textEncoder)
    case 4, 5:
        let config = try DDIMSchedulerConfig.decode(json, path: "scheduler/scheduler_config.json")
        _ = try NoiseSchedule(config: config)
        let steps = kind == 4 ? 4 : 25
        _ = try DDIMScheduler(config: config, steps: steps, eta: 0.5)
        _ = try DPMSolverMultistepScheduler(config: config, steps: steps, karras: true)
        _ = try EulerScheduler(config: config, steps: steps, ancestral: true)
        _ = try LCMScheduler(config: config, steps: min(steps, 8))
        _ = try TCDScheduler(config: config, steps: min(steps, 8))
    default:
        let index = try ModelIndex.decode(json, path: "model_index.json")
        _ = index.presentComponents
    }
}

/// A preset file, decoded as `panorama --preset` decodes it, and laid over another.
func fuzzPresets(_ data: Data) throws {
    let preset = try JSONDecoder().decode(Preset.self, from: data)
    _ = preset.over(preset)
}

/// A prompt: attention syntax, extra-network tags, chunking with each emphasis mode, tokenizing.
func fuzzPrompt(_ data: Data) throws {
    let text = String(decoding: data, as: UTF8.self)
    let tokenizer = Fixtures.tokenizer!
    _ = tokenizer(text)
    _ = tokenizer.encode(text)
    let (plain, tags) = ExtraNetworkTags.extract(text)
    _ = tags.map(\.arguments)
    var refusal: Error?
    do { _ = try PromptAttention.parse(plain) } catch { refusal = error }
    _ = try? PromptChunker.embeddingNames(in: plain, candidates: ["emb", "neg"], tokenizer: tokenizer, emphasis: .a1111)
    let chunker = try PromptChunker(tokenizer: tokenizer, embeddings: [(name: "emb", vectors: 3), (name: "neg", vectors: 80)])
    for emphasis in PromptEmphasis.allCases {
        do { _ = try chunker.parse(plain, emphasis: emphasis) } catch { refusal = refusal ?? error }
    }
    if let refusal { throw refusal }
}

/// A tokenizer folder: the input is split at lines "\u{1}FILE\u{1}" into vocab.json, merges.txt,
/// tokenizer_config.json and special_tokens_map.json (in that order; missing parts are absent files).
func fuzzTokenizerFiles(_ data: Data) throws {
    let folder = Fixtures.scratch.appendingPathComponent("tokenizer")
    try? FileManager.default.removeItem(at: folder)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let names = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
    let parts = data.split(separator: Data([1, 70, 73, 76, 69, 1]), maxSplits: names.count - 1, omittingEmptySubsequences: false)
    for (name, part) in zip(names, parts) { try Data(part).write(to: folder.appendingPathComponent(name)) }
    let tokenizer = try CLIPTokenizer(directory: folder)
    _ = tokenizer("a photo of a (cat:1.2), <|endoftext|> ! 東京 emoji 🙂")
    _ = tokenizer.tokensByID().count
}

/// PNG Info text as A1111 writes it in the "parameters" chunk.
func fuzzInfotext(_ data: Data) throws {
    let infotext = Infotext(parsing: String(decoding: data, as: UTF8.self))
    _ = infotext.a1111Parameters
    _ = try infotext.recalledSettings()
}

/// An HTTP request body for txt2img and img2img.
func fuzzRequest(_ data: Data) throws {
    let body = try JSONDecoder().decode(JSONValue.self, from: data)
    var refusal: Error?
    for img2img in [false, true] {
        do { _ = try GenerationRequest(json: body, img2img: img2img, limits: SizeLimits()) } catch { refusal = error }
    }
    if let refusal { throw refusal }
}
