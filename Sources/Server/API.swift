import Foundation
import Hummingbird
import Imaging
import Renderer
import Tensors
import Weights

/// The endpoints' work, with A1111's response shapes.
struct API: Sendable {
    let engine: Engine

    /// Runs `body` and answers its JSON, or the error's status and JSON body.
    func respond(_ body: () async throws -> JSONValue) async -> Response {
        await respondRaw { Self.json(try await body()) }
    }

    /// Runs `body` and answers its response, or the error's status and JSON body.
    func respondRaw(_ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let error as APIError {
            return Self.json(error.body, status: error.status)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return Self.json(APIError.detail(413, "the request body is larger than this server's limit of \(engine.configuration.maxBodyBytes) bytes").body,
                             status: 413)
        } catch let error as RenderError {
            return Self.json(APIError.a1111(400, error.description, error: "RenderError").body, status: 400)
        } catch {
            return Self.json(APIError.a1111(500, "\(error)", error: String(describing: type(of: error))).body, status: 500)
        }
    }

    static func json(_ value: JSONValue, status: Int = 200) -> Response {
        let data = value.data
        return Response(status: .init(code: status), headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// The body as JSON, within the size cap; malformed JSON is FastAPI's 422.
    func jsonBody(_ request: Request) async throws -> JSONValue {
        let limit = engine.configuration.maxBodyBytes
        let tooLarge = APIError.detail(413, "the request body is larger than this server's limit of \(limit) bytes")
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit { throw tooLarge }
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: limit) } catch { throw tooLarge }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer.readableBytesView))
        } catch {
            throw APIError.validation([FieldProblem(location: ["body"], message: "the body is not valid JSON", type: "value_error.jsondecode")])
        }
    }

    /// The bytes of a base64 field, as A1111's `decode_base64_to_image` takes it: with or without
    /// a `data:…;base64,` prefix, and with line breaks or spaces (MIME encoders wrap at 76
    /// columns; Python's b64decode skips them). Anything else that is not padded base64 is a 422.
    static func base64Bytes(_ text: String, field: String) throws -> Data {
        var payload = Substring(text)
        if payload.hasPrefix("data:"), let comma = payload.firstIndex(of: ",") { payload = payload[payload.index(after: comma)...] }
        // bytes, not Characters: uploads are megabytes
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }
        let decoded = payload.utf8.contains(where: isSpace)
            ? Data(base64Encoded: Data(payload.utf8.filter { !isSpace($0) }))
            : Data(base64Encoded: String(payload))
        guard let data = decoded else {
            throw APIError.validation(field: field, "not valid base64", type: "value_error.base64")
        }
        return data
    }

    /// A base64 image (see `base64Bytes`) decoded by the image readers, at most the server's
    /// megapixels.
    func image(_ text: String, field: String) throws -> RGBImage {
        let data = try Self.base64Bytes(text, field: field)
        do {
            return try ImageFile.read(data: data, name: field, maxBytes: engine.configuration.maxBodyBytes,
                                      maxPixels: engine.configuration.limits.maxPixels)
        } catch let error as ImagingError {
            throw APIError.validation(field: field, error.description, type: "value_error.image")
        }
    }

    // MARK: txt2img, img2img

    func generate(_ request: Request, img2img: Bool) async throws -> JSONValue {
        let body = try await jsonBody(request)
        let (g, first, kind) = try prepare(body, img2img: img2img)
        guard let result = try await engine.run(kind) else {
            throw APIError.detail(500, "the job returned nothing")
        }
        return response(g, first: first, result: result, body: body)
    }

    /// A txt2img or img2img body read, checked and turned into the engine's job: everything that
    /// can fail does so here, before the job is queued.
    func prepare(_ body: JSONValue, img2img: Bool) throws -> (GenerationRequest, PanoramaSettings, Job.Kind) {
        var g = try GenerationRequest(json: body, img2img: img2img, limits: engine.configuration.limits)
        if let name = g.overrideCheckpoint, engine.catalog.entry(named: name) == nil { throw Engine.unknownModel(name) }
        if g.seed < 0 { g.seed = Int64(UInt64.random(in: 0..<(1 << 32))) }
        guard let pipeline = engine.currentPipeline else { throw APIError.detail(503, "no model loaded") }
        let first = try engine.settings(g, pipeline: pipeline)
        var picture: RGBImage?, mask: Tensor?
        if img2img {
            // A1111's resize mode 0: the input stretched to the requested size
            var source = try image(g.initImages[0], field: "init_images")
            if source.width != g.width || source.height != g.height {
                source = source.resized(width: g.width, height: g.height)
            }
            picture = source
            if let maskText = g.mask {
                var maskImage = try image(maskText, field: "mask")
                if maskImage.width != g.width || maskImage.height != g.height {
                    maskImage = maskImage.resized(width: g.width, height: g.height, linearLight: false)
                }
                var m = maskImage.maskTensor()
                if g.inpaintingMaskInvert { m = Tensor(shape: m.shape, data: m.data.map { 1 - $0 }) }
                let painted = m.data.reduce(0) { $0 + ($1 >= 0.5 ? 1 : 0) }
                guard painted > 0 else { throw APIError.validation(field: "mask", "the mask has no white (≥ 50 % grey) pixel: nothing to repaint") }
                mask = m
            }
        }
        let regions = try regionInput(g, settings: first, pipeline: pipeline)
        return (g, first, .generate(g, image: picture, mask: mask, regions: regions))
    }

    /// The request's regions as the renderer's, uploaded masks decoded and scaled to the canvas,
    /// checked against it.
    func regionInput(_ g: GenerationRequest, settings: PanoramaSettings, pipeline: PanoramaPipeline) throws -> RegionInput {
        guard !g.regions.isEmpty else { return RegionInput() }
        guard !pipeline.model.isInpainting else {
            throw APIError.validation(field: "panorama_regions", "region prompts are not supported with an inpainting model")
        }
        var input = RegionInput()
        for (k, spec) in g.regions.enumerated() {
            let prompt = RegionPrompt(prompt: spec.prompt, negativePrompt: spec.negativePrompt,
                                      guidanceScale: spec.guidance.map(Float.init), weight: Float(spec.weight))
            if let rect = spec.rect {
                let fractions = rect.allSatisfy { $0 <= 1 }
                let (sx, sy) = fractions ? (Double(g.width), Double(g.height)) : (1, 1)
                input.regions.append(Region(shape: .rectangle(x: rect[0] * sx, y: rect[1] * sy, width: rect[2] * sx,
                                                              height: rect[3] * sy, feather: spec.feather), prompt: prompt))
            } else if let text = spec.mask {
                var picture = try image(text, field: "panorama_regions")
                if picture.width != g.width || picture.height != g.height {
                    picture = picture.resizedNearest(width: g.width, height: g.height)
                }
                input.masks[k] = picture
                input.regions.append(Region(shape: .mask(width: picture.width, height: picture.height,
                                                         values: picture.maskTensor().data), prompt: prompt))
            }
        }
        do {
            try pipeline.validate(engine.composition(g, regions: input.regions, steps: settings.steps), for: settings)
        } catch let error as RenderError {
            throw APIError.validation(field: "panorama_regions", error.description)
        }
        return input
    }

    private func response(_ g: GenerationRequest, first: PanoramaSettings, result: JobResult, body: JSONValue) -> JSONValue {
        let count = result.seeds.count
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMddHHmmss"
        let info: JSONValue = [
            "prompt": .string(g.prompt), "all_prompts": .array(Array(repeating: .string(g.prompt), count: count)),
            "negative_prompt": .string(g.negativePrompt),
            "all_negative_prompts": .array(Array(repeating: .string(g.negativePrompt), count: count)),
            "seed": .number(Double(result.seeds.first ?? first.seed)),
            "all_seeds": .array(result.seeds.map { .number(Double($0)) }),
            "subseed": .number(-1), "all_subseeds": .array(Array(repeating: .number(-1), count: count)),
            "subseed_strength": 0, "width": JSONValue(g.width), "height": JSONValue(g.height),
            "sampler_name": .string(g.samplerName), "scheduler": JSONValue(g.scheduler),
            "cfg_scale": JSONValue(g.cfgScale), "steps": JSONValue(g.steps), "batch_size": JSONValue(g.batchSize),
            "restore_faces": false, "face_restoration_model": nil,
            "sd_model_name": .string(result.modelName), "sd_model_hash": JSONValue(result.modelHash),
            "sd_vae_name": nil, "sd_vae_hash": nil, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
            "denoising_strength": result.denoisingStrength.map { JSONValue.number($0) } ?? nil,
            "extra_generation_params": [:], "index_of_first_image": 0,
            "infotexts": .array(result.infotexts.map(JSONValue.string)), "styles": [],
            "job_timestamp": .string(formatter.string(from: Date())), "clip_skip": 1,
            "is_using_inpainting_conditioning": .bool(engine.currentPipeline?.model.isInpainting == true && result.denoisingStrength != nil),
            "version": "panorama",
        ]
        // A1111 echoes the request with its defaults filled in (images left out of the echo)
        var parameters: [String: JSONValue] = [
            "prompt": .string(g.prompt), "negative_prompt": .string(g.negativePrompt), "steps": JSONValue(g.steps),
            "cfg_scale": JSONValue(g.cfgScale), "width": JSONValue(g.width), "height": JSONValue(g.height),
            "seed": .number(Double(g.seed)), "sampler_name": .string(g.samplerName), "scheduler": JSONValue(g.scheduler),
            "n_iter": JSONValue(g.nIter), "batch_size": JSONValue(g.batchSize), "eta": g.eta.map { JSONValue.number($0) } ?? nil,
            "denoising_strength": JSONValue(g.denoisingStrength), "send_images": .bool(g.sendImages),
            "panorama_circular": .bool(g.circular), "panorama_spot": .bool(g.spot),
            "panorama_window_weights": .string(g.windowWeights), "panorama_stride": JSONValue(g.stride),
        ]
        if case .object(let sent) = body {
            for (key, value) in sent where parameters[key] == nil && key != "init_images" && key != "mask" { parameters[key] = value }
        }
        if case .object = body, body["init_images"] != nil { parameters["init_images"] = nil; parameters["mask"] = nil }
        let images: [JSONValue] = g.sendImages ? result.images.map { .string($0.base64EncodedString()) } : []
        return ["images": .array(images), "parameters": .object(parameters), "info": .string(info.text)]
    }

    // MARK: listings and options

    /// `hash` and `sha256` as `ModelCatalog.hashes(of:)` decides (never a large file hashed here).
    func sdModels() -> JSONValue {
        .array(engine.catalog.entries.map { entry in
            let (hash, sha256) = engine.catalog.hashes(of: entry)
            return ["title": .string(entry.title), "model_name": .string(entry.modelName), "hash": JSONValue(hash),
                    "sha256": JSONValue(sha256), "filename": .string(entry.url.lastPathComponent), "config": nil]
        })
    }

    func options() -> JSONValue {
        ["sd_model_checkpoint": JSONValue(engine.currentModel?.title),
         "sd_checkpoint_hash": JSONValue(engine.currentModel.flatMap { engine.catalog.hashes(of: $0).sha256 }),
         "samples_format": "png", "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "eta_ddim": 0,
         "sd_lora": "None", "save_images": true]
    }

    /// Only `sd_model_checkpoint` does anything (it loads that model through the queue); other
    /// options are accepted and ignored. An unknown model is 404.
    func setOptions(_ request: Request) async throws -> JSONValue {
        let body = try await jsonBody(request)
        var r = try FieldReader(body)
        let name = r.string("sd_model_checkpoint", nil)
        try r.finish()
        if let name {
            guard let entry = engine.catalog.entry(named: name) else { throw Engine.unknownModel(name) }
            _ = try await engine.run(.loadModel(entry))
        }
        return nil
    }

    static func samplers() -> JSONValue {
        .array(APICatalog.samplers.map {
            ["name": .string($0.name), "aliases": .array($0.aliases.map(JSONValue.string)), "options": [:]]
        })
    }

    static func schedulers() -> JSONValue {
        .array(APICatalog.schedulers.map {
            ["name": .string($0.name), "label": .string($0.label), "aliases": nil, "default_rho": -1, "need_inner_model": false]
        })
    }

    func loras() -> JSONValue {
        .array(FileListing.files(in: engine.configuration.loraDirectory, extensions: Set(LoRALibrary.extensions)).map { url in
            let name = url.deletingPathExtension().lastPathComponent
            return ["name": .string(name), "alias": .string(name), "path": .string(url.lastPathComponent), "metadata": [:]]
        })
    }

    func embeddings() -> JSONValue {
        var loaded: [String: JSONValue] = [:], skipped: [String: JSONValue] = [:]
        let library = TextualInversionLibrary(directories: engine.embeddingDirectories)
        for name in library.names {
            guard let url = library.files[name] else { continue }
            if let embedding = try? TextualInversionEmbedding(url: url) {
                loaded[name] = ["step": nil, "sd_checkpoint": nil, "sd_checkpoint_name": nil,
                                "shape": JSONValue(embedding.width), "vectors": JSONValue(embedding.count)]
            } else {
                skipped[name] = ["step": nil, "sd_checkpoint": nil, "sd_checkpoint_name": nil, "shape": nil, "vectors": 0]
            }
        }
        return ["loaded": .object(loaded), "skipped": .object(skipped)]
    }

    /// `skipCurrentImage`: A1111's `skip_current_image` query parameter.
    func progress(skipCurrentImage: Bool = false) -> JSONValue {
        let p = engine.progress
        let image = skipCurrentImage ? nil : engine.currentImagePNG()
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMddHHmmss"
        return ["progress": JSONValue(p.progress), "eta_relative": JSONValue(p.etaRelative),
                "state": ["skipped": .bool(p.skipped), "interrupted": .bool(p.interrupted), "stopping_generation": false,
                          "job": .string(p.job), "job_count": JSONValue(p.jobCount),
                          "job_timestamp": .string(p.started.map(formatter.string(from:)) ?? "0"),
                          "job_no": JSONValue(p.jobNumber), "sampling_step": JSONValue(p.samplingStep),
                          "sampling_steps": JSONValue(p.samplingSteps)],
                "current_image": image.map { .string($0.base64EncodedString()) } ?? nil, "textinfo": nil]
    }

    /// `{"image": base64}` → `{"info", "items", "parameters"}` as A1111's png-info: the
    /// "parameters" text, the other text chunks, and A1111's parsed dictionary.
    func pngInfo(_ request: Request) async throws -> JSONValue {
        let body = try await jsonBody(request)
        var r = try FieldReader(body)
        let text = r.string("image", nil)
        r.check(text != nil && !(text ?? "").isEmpty, "image", "field required")
        try r.finish()
        let data = try Self.base64Bytes(text!, field: "image")
        guard ImageFile.format(ofFileStarting: [UInt8](data.prefix(12))) != nil else {
            throw APIError.validation(field: "image", "not a \(ImageFile.formatList) image", type: "value_error.image")
        }
        var chunks: [String: String] = [:]
        if ImageFile.format(ofFileStarting: [UInt8](data.prefix(12))) == .png {
            do { chunks = try PNG.textChunks(data: data, name: "image", maxBytes: engine.configuration.maxBodyBytes) } catch {
                throw APIError.validation(field: "image", "\(error)", type: "value_error.image")
            }
        }
        let info = chunks["parameters"] ?? ""
        let items = chunks.filter { $0.key != "parameters" }.mapValues(JSONValue.string)
        let parameters = info.isEmpty ? [:] : Infotext(parsing: info).a1111Parameters.mapValues(JSONValue.string)
        return ["info": .string(info), "items": .object(items), "parameters": .object(parameters)]
    }
}
