import Foundation
import Hummingbird
import Imaging
import Renderer

/// The endpoints the studio page uses beyond A1111's API, under `/panorama/v1`:
///
/// - `GET config`: the loaded model, the lists for the pickers, the window and the limits.
/// - `POST tokens` `{"prompt"}` → `{"tokens", "chunks", "limit"}`: A1111's token counter.
/// - `POST jobs`: a txt2img or img2img body (`"mode": "txt2img"|"img2img"`) queued without
///   waiting → 202 `{"id", "position"}`; `GET jobs`, `GET jobs/{id}`, `DELETE jobs/{id}` (cancel).
/// - `GET gallery?offset&limit`: the pictures in `--outputs`, newest first, with their
///   parameters; `GET gallery/{id}`: one of them (or a region mask written beside it) as PNG.
///
/// Gallery ids are file names of the output pattern, checked against it and then looked up in the
/// folder's listing: a request's string never becomes a path otherwise.
struct StudioAPI: Sendable {
    let api: API
    let gallery: Gallery
    var engine: Engine { api.engine }

    init(api: API) {
        self.api = api
        gallery = Gallery(folder: api.engine.configuration.outputs)
    }

    func config() throws -> JSONValue {
        guard let pipeline = engine.currentPipeline else { throw APIError.detail(503, "no model loaded") }
        let limits = engine.configuration.limits
        let loras = api.loras()
        var embeddings: [String] = []
        if case .object(let loaded)? = api.embeddings()["loaded"] { embeddings = loaded.keys.sorted() }
        return [
            "model": JSONValue(engine.currentModel?.title),
            "models": .array(engine.catalog.entries.map { ["title": .string($0.title), "model_name": .string($0.modelName)] }),
            "samplers": .array(APICatalog.samplers.map { .string($0.name) }),
            "schedulers": .array(APICatalog.schedulers.map { ["name": .string($0.name), "label": .string($0.label)] }),
            "loras": .array({ if case .array(let items) = loras { items.compactMap { $0["name"] } } else { [] } }()),
            "embeddings": .array(embeddings.map(JSONValue.string)),
            "window": JSONValue(pipeline.model.latentWindow * pipeline.vaeScale),
            "vae_scale": JSONValue(pipeline.vaeScale),
            "inpainting": .bool(pipeline.model.isInpainting),
            "limits": ["max_side": JSONValue(limits.maxSide), "max_pixels": JSONValue(limits.maxPixels),
                       "max_body_bytes": JSONValue(engine.configuration.maxBodyBytes)],
            "queue_size": JSONValue(engine.configuration.queueSize),
        ]
    }

    /// A1111's token counter: the prompt's tokens (embedding vectors included, LoRA tags not) and
    /// its chunks of 75.
    func tokens(_ request: Request) async throws -> JSONValue {
        let body = try await api.jsonBody(request)
        var r = try FieldReader(body)
        let prompt = r.string("prompt", "") ?? ""
        r.check(prompt.utf8.count <= 1 << 20, "prompt", "the prompt is longer than 1 MiB")
        try r.finish()
        guard let pipeline = engine.currentPipeline else { throw APIError.detail(503, "no model loaded") }
        var settings = PanoramaSettings(prompt: prompt, width: 8, height: 8)
        settings.embeddingDirectories = engine.embeddingDirectories
        let parsed: (tokenCount: Int, chunks: Int)
        do {
            let (prompt, _) = try pipeline.promptEncoder(settings).parse(prompt)
            parsed = (prompt.tokenCount, prompt.chunks.count)
        } catch {
            throw APIError.validation(field: "prompt", "\(error)")
        }
        let chunkLength = pipeline.model.tokenizer.maxLength - 2
        let chunks = max(1, parsed.chunks)
        return ["tokens": JSONValue(parsed.tokenCount), "chunks": JSONValue(chunks), "limit": JSONValue(chunks * chunkLength)]
    }

    // MARK: jobs

    func submit(_ request: Request) async throws -> Response {
        let body = try await api.jsonBody(request)
        var r = try FieldReader(body)
        let mode = r.string("mode", "txt2img") ?? "txt2img"
        r.check(mode == "txt2img" || mode == "img2img", "mode", "mode must be txt2img or img2img")
        try r.finish()
        let (_, _, kind) = try api.prepare(body, img2img: mode == "img2img")
        let record = try engine.submit(Job(kind: kind) { _ in })
        let position = engine.job(record.id)?.position
        return API.json(["id": .string(record.id), "position": position.map { JSONValue($0) } ?? nil], status: 202)
    }

    func jobs() -> JSONValue {
        let records = engine.jobs
        var position = 0
        return ["jobs": .array(records.map { record in
            if record.state == .queued { position += 1 }
            return json(record, position: record.state == .queued ? position : nil)
        })]
    }

    func job(_ id: String) throws -> JSONValue {
        guard let (record, position) = engine.job(id) else { throw APIError.detail(404, "no job \(id.debugDescription)") }
        return json(record, position: position)
    }

    func cancel(_ id: String) throws -> JSONValue {
        guard let record = engine.cancel(id) else { throw APIError.detail(404, "no job \(id.debugDescription)") }
        return json(record, position: nil)
    }

    private func json(_ record: JobRecord, position: Int?) -> JSONValue {
        var progress = record.state == .done ? 1.0 : 0, eta = 0.0
        if record.state == .running {
            let p = engine.progress
            progress = p.progress
            eta = p.etaRelative
        }
        return ["id": .string(record.id), "mode": .string(record.mode), "state": .string(record.state.rawValue),
                "prompt": .string(record.prompt), "width": JSONValue(record.width), "height": JSONValue(record.height),
                "steps": JSONValue(record.steps), "position": position.map { JSONValue($0) } ?? nil,
                "progress": JSONValue(progress), "eta": JSONValue(eta),
                "images": .array(record.images.map(JSONValue.string)), "error": JSONValue(record.error),
                "submitted": JSONValue(record.submitted.timeIntervalSince1970.rounded())]
    }

    // MARK: gallery

    func galleryList(_ request: Request) throws -> JSONValue {
        let query = request.uri.queryParameters
        func number(_ key: String, _ fallback: Int) throws -> Int {
            guard let text = query.get(key) else { return fallback }
            guard let n = Int(text), n >= 0 else { throw APIError.validation([FieldProblem(location: ["query", key], message: "value is not a valid integer", type: "type_error.integer")]) }
            return n
        }
        let offset = try number("offset", 0), limit = min(try number("limit", 60), 500)
        let ids = gallery.pictures()
        let page = ids.dropFirst(offset).prefix(limit)
        return ["total": JSONValue(ids.count), "items": .array(page.compactMap { gallery.item($0) })]
    }

    func galleryImage(_ id: String) throws -> Response {
        guard let data = gallery.data(id) else { throw APIError.detail(404, "no picture \(id.debugDescription) in the gallery") }
        return Response(status: .ok, headers: [.contentType: "image/png", .cacheControl: "private, max-age=3600"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The pictures of the outputs folder, as the studio's gallery lists them. Their parameters are
/// read once per file (keyed by name, size and modification time).
final class Gallery: @unchecked Sendable {
    let folder: URL
    private let lock = NSLock()
    private var cache: [String: (stamp: [Double], item: JSONValue)] = [:]

    init(folder: URL) {
        self.folder = folder
    }

    /// "NNNNN-SEED.png" (a picture) or "NNNNN-SEED-regionK.png" (a region mask written beside it).
    static func isID(_ name: String, picturesOnly: Bool = false) -> Bool {
        guard name.hasSuffix(".png"), name.utf8.count <= 64 else { return false }
        let parts = name.dropLast(4).split(separator: "-", omittingEmptySubsequences: false)
        let digits: (Substring) -> Bool = { !$0.isEmpty && $0.count <= 20 && $0.allSatisfy { $0 >= "0" && $0 <= "9" } }
        switch parts.count {
        case 2: return digits(parts[0]) && digits(parts[1])
        case 3 where !picturesOnly:
            return digits(parts[0]) && digits(parts[1]) && parts[2].hasPrefix("region") && digits(parts[2].dropFirst(6))
        default: return false
        }
    }

    /// The pictures' ids, newest (highest number) first.
    func pictures() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { Self.isID($0, picturesOnly: true) }.sorted { a, b in
            let (na, nb) = (Int(a.prefix { $0 != "-" }) ?? 0, Int(b.prefix { $0 != "-" }) ?? 0)
            return na != nb ? na > nb : a > b
        }
    }

    /// The bytes of `id` when it is a gallery file that exists.
    func data(_ id: String) -> Data? {
        guard Self.isID(id), let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path),
              names.contains(id) else { return nil }
        return try? Data(contentsOf: folder.appendingPathComponent(id))
    }

    /// `{"id", "width", "height", "created", "info", "parameters", "regions"}` of picture `id`.
    func item(_ id: String) -> JSONValue? {
        let url = folder.appendingPathComponent(id)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
              let size = attributes[.size] as? NSNumber, let modified = attributes[.modificationDate] as? Date else { return nil }
        let stamp = [size.doubleValue, modified.timeIntervalSince1970]
        if let cached = lock.withLock({ cache[id] }), cached.stamp == stamp { return cached.item }
        guard let (width, height) = Self.pngSize(url), let chunks = try? PNG.textChunks(of: url) else { return nil }
        let info = chunks["parameters"] ?? ""
        let parameters = info.isEmpty ? [:] : Infotext(parsing: info).a1111Parameters.mapValues(JSONValue.string)
        let regions = chunks["regions"].flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) } ?? nil
        let item: JSONValue = ["id": .string(id), "width": JSONValue(width), "height": JSONValue(height),
                               "created": JSONValue(modified.timeIntervalSince1970.rounded()), "info": .string(info),
                               "parameters": .object(parameters), "regions": regions]
        lock.withLock { cache[id] = (stamp, item) }
        return item
    }

    /// Width and height from a PNG's IHDR (the first chunk), without decoding it.
    static func pngSize(_ url: URL) -> (Int, Int)? {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return nil }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 24), head.count == 24 else { return nil }
        let bytes = [UInt8](head)
        guard bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]),
              bytes[12..<16].elementsEqual(Array("IHDR".utf8)) else { return nil }
        let value: (Int) -> Int = { at in bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        return (value(16), value(20))
    }
}
