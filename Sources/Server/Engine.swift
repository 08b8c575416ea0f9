import Foundation
import Imaging
import Logging
import Models
import Renderer
import Schedulers
import Tensors
import Weights

/// Where the server finds and keeps things, and its limits.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 7860
    /// "USER:PASS" for HTTP basic authentication (nil: none).
    public var apiAuth: String?
    /// The model loaded at start (the bundled one by default).
    public var defaultModel: URL?
    /// Diffusers folders and single files offered besides the default model.
    public var modelsDirectory: URL?
    /// CLIP tokenizer files for single-file checkpoints (the bundled model's `tokenizer`).
    public var tokenizer: URL?
    public var loraDirectory: URL?
    public var embeddingsDirectory: URL?
    /// Where every job's PNGs are written.
    public var outputs = URL(fileURLWithPath: "outputs")
    /// Jobs waiting beyond the running one; one more is answered with 429.
    public var queueSize = 16
    public var limits = SizeLimits()
    /// Largest request body (413 beyond).
    public var maxBodyBytes = 64 << 20
    /// The HTTP server's log level (tests that stop servers by cancelling them use `.critical`).
    public var logLevel = Logger.Level.info

    public init() {}
}

/// What a finished job returns.
struct JobResult: Sendable {
    var images: [Data]
    var seeds: [UInt64]
    var infotexts: [String]
    var settings: PanoramaSettings
    var denoisingStrength: Double?
    var modelName: String
    var modelHash: String?
}

/// A queued piece of work.
struct Job: Sendable {
    enum Kind: Sendable {
        case generate(GenerationRequest, image: RGBImage?, mask: Tensor?, regions: RegionInput = RegionInput())
        case loadModel(ModelCatalog.Entry)
    }
    let kind: Kind
    let done: @Sendable (Result<JobResult?, Error>) -> Void
    var id = ""
}

/// A request's regions, their uploaded masks decoded (by region index), ready for the engine.
struct RegionInput: Sendable {
    var regions: [Region] = []
    var masks: [Int: RGBImage] = [:]
}

/// A job as the studio's queue shows it.
public struct JobRecord: Sendable {
    public enum State: String, Sendable {
        case queued, running, done, failed, cancelled, interrupted
        var isFinished: Bool { self != .queued && self != .running }
    }
    /// "j1", "j2", … in order of submission.
    public let id: String
    /// "txt2img", "img2img" or "load-model".
    public let mode: String
    public var state = State.queued
    public var prompt = ""
    public var width = 0
    public var height = 0
    public var steps = 0
    /// The gallery ids (output file names) of its pictures so far.
    public var images: [String] = []
    public var error: String?
    public let submitted: Date
}

/// The progress of the running job, as `/sdapi/v1/progress` reports it.
public struct ProgressSnapshot: Sendable {
    /// Jobs running and waiting.
    public var jobCount = 0
    /// The image of the running job being rendered (0-based), its step and step count.
    public var jobNumber = 0
    public var samplingStep = 0
    public var samplingSteps = 0
    /// Images of the running job finished, and its image count (n_iter x batch_size).
    public var imagesDone = 0
    public var imagesTotal = 0
    /// Whether the running job was interrupted, and whether its current picture was skipped.
    public var interrupted = false
    public var skipped = false
    /// When the running job started (nil when idle).
    public var started: Date?
    /// "txt2img" or "img2img" while one runs.
    public var job = ""
    /// The running job's canvas after its last step, and whether it wraps around (360°).
    public var latents: Tensor?
    public var circular = false

    /// 0–1 over the whole job (all its images).
    public var progress: Double {
        guard imagesTotal > 0, samplingSteps > 0 else { return 0 }
        return min(1, (Double(imagesDone) + Double(samplingStep) / Double(samplingSteps)) / Double(imagesTotal))
    }

    /// Seconds left, estimated as A1111 does from the time spent so far.
    public var etaRelative: Double {
        guard let started, progress > 0 else { return 0 }
        let elapsed = Date().timeIntervalSince(started)
        return elapsed / progress - elapsed
    }
}

/// One model kept loaded, and one job at a time from a bounded FIFO queue on a thread of its own
/// (the denoising loops are CPU-bound and synchronous).
public final class Engine: @unchecked Sendable {
    public let configuration: ServerConfiguration
    public let catalog: ModelCatalog
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var records: [JobRecord] = []
    private var jobCounter = 0
    private var runningID: String?
    private var running = false
    private var state = ProgressSnapshot()
    private var previewCache: (key: [Int], started: Date?, data: Data)?
    private var interruptRequested = false
    private var skipRequested = false
    private var pipeline: PanoramaPipeline?
    private var loadedEntry: ModelCatalog.Entry?
    private var loadedLoRAs: [LoRARequest] = []
    private var modelHashes: [URL: String] = [:]
    private var outputCounter = 0
    private var worker: Thread?

    /// Loads the default model (the first in the catalog) and starts the worker.
    public init(configuration: ServerConfiguration) throws {
        self.configuration = configuration
        catalog = ModelCatalog(defaultModel: configuration.defaultModel, modelsDirectory: configuration.modelsDirectory)
        guard let first = catalog.entries.first else {
            throw APIError.detail(500, "no model: the default model was not found and --models-dir holds none")
        }
        try FileManager.default.createDirectory(at: configuration.outputs, withIntermediateDirectories: true)
        outputCounter = Self.nextOutputNumber(in: configuration.outputs)
        try load(first, loras: [])
        let thread = Thread { [weak self] in self?.work() }
        thread.name = "panorama-engine"
        thread.stackSize = 16 << 20
        worker = thread
        thread.start()
    }

    // MARK: state read by the API

    /// The loaded model's catalog entry.
    public var currentModel: ModelCatalog.Entry? { condition.withLock { loadedEntry } }

    var currentPipeline: PanoramaPipeline? { condition.withLock { pipeline } }

    public var progress: ProgressSnapshot { condition.withLock { state } }

    /// The running job's canvas after its last step as a PNG, A1111's `current_image`: the latent
    /// preview (`LatentPreview`: a map fitted to the model's VAE, or TAESD) at the picture's size,
    /// made once per step however often it is asked for. nil when no job is sampling.
    public func currentImagePNG() -> Data? {
        let (snapshot, pipeline, cached) = condition.withLock { (state, self.pipeline, previewCache) }
        guard let latents = snapshot.latents, let pipeline else { return nil }
        let key = [snapshot.jobCount, snapshot.jobNumber, snapshot.imagesDone, snapshot.samplingStep]
        if let cached, cached.key == key, cached.started == snapshot.started { return cached.data }
        let preview = LatentPreview(for: pipeline).image(latents, upscale: .nearest(factor: pipeline.vaeScale),
                                                         circular: snapshot.circular)
        guard let data = try? PNG.encoded(RGBImage(width: preview.width, height: preview.height, pixels: preview.pixels)) else {
            return nil
        }
        condition.withLock { previewCache = (key, snapshot.started, data) }
        return data
    }

    /// Stops the running job after its current step (its picture so far is returned) and sets
    /// `interrupted`, as A1111's interrupt does.
    public func interrupt() {
        condition.withLock {
            if running {
                interruptRequested = true
                state.interrupted = true
            }
        }
    }

    /// Ends the running job's current picture after its current step (it is still decoded and
    /// saved) and goes on with the job's next one, as A1111's skip does.
    public func skip() {
        condition.withLock {
            if running {
                skipRequested = true
                state.skipped = true
            }
        }
    }

    /// Finished jobs kept for the studio's queue view.
    static let finishedRecordsKept = 100

    /// Queues `job` and returns its record, or throws 429 when the queue is full.
    @discardableResult
    func submit(_ job: Job) throws -> JobRecord {
        try condition.withLock {
            guard queue.count < configuration.queueSize else {
                throw APIError.detail(429, "the queue is full (\(configuration.queueSize) jobs waiting); try again later")
            }
            jobCounter += 1
            var job = job
            job.id = "j\(jobCounter)"
            var record = JobRecord(id: job.id, mode: "load-model", submitted: Date())
            if case let .generate(request, image, _, _) = job.kind {
                record = JobRecord(id: job.id, mode: image == nil ? "txt2img" : "img2img", submitted: record.submitted)
                record.prompt = request.prompt
                record.width = request.width
                record.height = request.height
                record.steps = request.steps
            }
            records.append(record)
            let finished = records.indices.filter { records[$0].state.isFinished }
            if finished.count > Self.finishedRecordsKept {
                let drop = Set(finished.prefix(finished.count - Self.finishedRecordsKept))
                records = records.enumerated().filter { !drop.contains($0.offset) }.map(\.element)
            }
            queue.append(job)
            state.jobCount = queue.count + (running ? 1 : 0)
            condition.signal()
            return record
        }
    }

    /// Runs `kind` through the queue and waits for it.
    func run(_ kind: Job.Kind) async throws -> JobResult? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JobResult?, Error>) in
            do {
                try submit(Job(kind: kind) { continuation.resume(with: $0) })
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// The jobs running and waiting, in queue order, then the finished ones kept, newest first.
    public var jobs: [JobRecord] {
        condition.withLock {
            let order = Dictionary(uniqueKeysWithValues: queue.enumerated().map { ($0.element.id, $0.offset) })
            let active = records.filter { !$0.state.isFinished }
                .sorted { (order[$0.id] ?? -1) < (order[$1.id] ?? -1) }
            return active + records.filter(\.state.isFinished).reversed()
        }
    }

    /// The job `id`, with its place in the queue (1-based; nil unless waiting).
    public func job(_ id: String) -> (record: JobRecord, position: Int?)? {
        condition.withLock {
            guard let record = records.first(where: { $0.id == id }) else { return nil }
            return (record, queue.firstIndex { $0.id == id }.map { $0 + 1 })
        }
    }

    /// Cancels job `id`: a waiting job leaves the queue (its caller gets a 409), the running one is
    /// interrupted after its current step. nil when there is no such job.
    @discardableResult
    public func cancel(_ id: String) -> JobRecord? {
        let removed: Job? = condition.withLock {
            guard let index = queue.firstIndex(where: { $0.id == id }) else { return nil }
            let job = queue.remove(at: index)
            state.jobCount = queue.count + (running ? 1 : 0)
            updateRecord(id) { $0.state = .cancelled }
            return job
        }
        if let removed {
            removed.done(.failure(APIError.detail(409, "job \(id) was cancelled before it started")))
        } else if condition.withLock({ runningID == id }) {
            interrupt()
        }
        return condition.withLock { records.first { $0.id == id } }
    }

    /// Applies `change` to the record of job `id`; call with the lock held.
    private func updateRecord(_ id: String?, _ change: (inout JobRecord) -> Void) {
        guard let id, let index = records.firstIndex(where: { $0.id == id }) else { return }
        change(&records[index])
    }

    private func work() {
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let job = queue.removeFirst()
            running = true
            runningID = job.id
            updateRecord(job.id) { $0.state = .running }
            interruptRequested = false
            state = ProgressSnapshot()
            state.jobCount = queue.count + 1
            state.started = Date()
            condition.unlock()
            let result: Result<JobResult?, Error>
            do {
                switch job.kind {
                case .loadModel(let entry):
                    try load(entry, loras: [])
                    result = .success(nil)
                case let .generate(request, image, mask, regions):
                    result = .success(try generate(request, image: image, mask: mask, regions: regions))
                }
            } catch {
                result = .failure(error)
            }
            condition.withLock {
                let interrupted = state.interrupted
                updateRecord(job.id) { record in
                    switch result {
                    case .success: record.state = interrupted ? .interrupted : .done
                    case .failure(let error):
                        record.state = .failed
                        record.error = Self.message(error)
                    }
                }
                runningID = nil
                running = false
                state.jobCount = queue.count
                state.samplingStep = 0
                state.samplingSteps = 0
                state.imagesDone = 0
                state.imagesTotal = 0
                state.started = nil
                state.job = ""
            }
            job.done(result)
        }
    }

    // MARK: models

    private func load(_ entry: ModelCatalog.Entry, loras: [LoRARequest]) throws {
        if condition.withLock({ loadedEntry == entry && loadedLoRAs == loras && pipeline != nil }) { return }
        let applications = try LoRARequest.resolve(loras, library: loraLibrary)
        let model: StableDiffusionModel
        if entry.isSingleFile {
            guard let tokenizer = configuration.tokenizer else {
                throw APIError.detail(500, "single-file checkpoints need CLIP's tokenizer files (the bundled model's), which were not found")
            }
            model = try StableDiffusionModel(checkpoint: entry.url, configuration: .standard(tokenizer: tokenizer, predictionType: nil),
                                             loras: applications)
        } else {
            model = try StableDiffusionModel(folder: entry.url, loras: applications)
        }
        let hash = condition.withLock { modelHashes[entry.url] } ?? ((try? FileHash.modelHash(ofModelAt: entry.url)) ?? nil)
        condition.withLock {
            pipeline = PanoramaPipeline(model: model)
            loadedEntry = entry
            loadedLoRAs = loras
            if let hash { modelHashes[entry.url] = hash }
        }
    }

    /// The folders `<lora:NAME>` tags are looked up in (by listing, never by joining the name).
    var loraLibrary: LoRALibrary {
        LoRALibrary(folders: configuration.loraDirectory.map { [$0] } ?? [])
    }

    var embeddingDirectories: [URL] { configuration.embeddingsDirectory.map { [$0] } ?? [] }

    // MARK: requests

    /// The settings of the first image of `request` on `pipeline`, checked against the model, the
    /// memory estimate and this request's LoRA names: everything that can fail before any work.
    func settings(_ request: GenerationRequest, pipeline: PanoramaPipeline) throws -> PanoramaSettings {
        let (sampler, spacing) = try request.sampler()
        var s = PanoramaSettings(prompt: request.prompt, width: request.width, height: request.height)
        s.negativePrompt = request.negativePrompt
        s.steps = request.steps
        s.guidanceScale = Float(request.cfgScale)
        s.seed = request.seed < 0 ? UInt64.random(in: 0..<(1 << 32)) : UInt64(request.seed)
        s.sampler = sampler
        s.timestepSpacing = spacing
        // A1111 sends eta to every sampler; only DDIM's and TCD's apply here
        if let eta = request.eta, sampler.acceptsEta { s.eta = Float(eta) }
        s.circular = request.circular
        s.spotDiffusion = request.spot
        s.stride = request.stride
        s.windowWeighting = request.spot ? .uniform : (WindowWeighting(name: request.windowWeights) ?? .uniform)
        s.embeddingDirectories = embeddingDirectories
        do {
            try pipeline.validate(s)
        } catch let error as RenderError {
            switch error {
            case .invalidSize(let message):
                throw APIError.validation(field: message.hasPrefix("height") ? "height" : "width", message)
            default: throw APIError.a1111(400, error.description, error: "RenderError")
            }
        }
        for request in try loraRequests(request) {
            if case .name(let name) = request.source {
                do { _ = try loraLibrary.file(named: name) } catch {
                    throw APIError.validation(field: "prompt", "no LoRA named \"\(name)\" on this server (see /sdapi/v1/loras)")
                }
            }
        }
        do {
            _ = try pipeline.embeddingFiles(s, prompts: request.allPrompts)
        } catch {
            throw APIError.validation(field: "prompt", "\(error)")
        }
        return s
    }

    func loraRequests(_ request: GenerationRequest) throws -> [LoRARequest] {
        do {
            return try LoRARequest.fromPrompts(request.allPrompts)
        } catch {
            throw APIError.validation(field: "prompt", "\(error)")
        }
    }

    /// The text of an error as the studio shows it: an API error's detail, else its description.
    static func message(_ error: Error) -> String {
        guard let error = error as? APIError else { return "\(error)" }
        switch error.body["detail"] {
        case .string(let text)?: return text
        case .array(let problems)?:
            return problems.compactMap { problem -> String? in
                guard case .string(let message)? = problem["msg"] else { return nil }
                if case .array(let location)? = problem["loc"], case .string(let field)? = location.last { return "\(field): \(message)" }
                return message
            }.joined(separator: "; ")
        default: return error.description
        }
    }

    /// A1111's answer to a model name it does not have.
    static func unknownModel(_ name: String) -> APIError {
        APIError.a1111(404, "model \(name.debugDescription) not found (see /sdapi/v1/sd-models)", error: "RuntimeError")
    }

    /// The composition of a request's regions over its prompt.
    func composition(_ request: GenerationRequest, regions: [Region], steps: Int) -> Composition {
        var composition = Composition(regions: regions, bootstrapSteps: 0, fewStepMode: request.fewStep)
        composition.bootstrapSteps = request.bootstrapSteps
            ?? Composition.defaultBootstrapSteps(steps: steps, fewStep: composition.usesFewStep(steps: steps))
        return composition
    }

    private func generate(_ request: GenerationRequest, image: RGBImage?, mask: Tensor?, regions: RegionInput) throws -> JobResult {
        guard let loaded = currentModel else { throw APIError.detail(500, "no model loaded") }
        // A1111's override_settings.sd_model_checkpoint: this job's model, the loaded one back
        // afterwards unless override_settings_restore_afterwards is false
        var entry = loaded
        if let name = request.overrideCheckpoint {
            guard let named = catalog.entry(named: name) else { throw Self.unknownModel(name) }
            entry = named
        }
        defer {
            if entry != loaded && request.restoreSettingsAfterwards { try? load(loaded, loras: []) }
        }
        try load(entry, loras: try loraRequests(request))
        guard let pipeline = currentPipeline else { throw APIError.detail(500, "no model loaded") }
        var first = try settings(request, pipeline: pipeline)
        try pipeline.fitTemporaryFiles(&first, encoding: image != nil)
        let count = request.nIter * request.batchSize
        condition.withLock {
            state.imagesTotal = count
            state.job = image == nil ? "txt2img" : "img2img"
        }
        let hash = condition.withLock { modelHashes[entry.url] }
        var result = JobResult(images: [], seeds: [], infotexts: [], settings: first,
                               denoisingStrength: image == nil ? nil : request.denoisingStrength,
                               modelName: pipeline.model.name, modelHash: hash)
        for index in 0..<count {
            if condition.withLock({ interruptRequested }) { break }
            condition.withLock {
                skipRequested = false
                state.skipped = false
            }
            var s = first
            s.seed = first.seed &+ UInt64(index)
            var extra: [Infotext.Field] = []
            var loop: any DenoisingProcess
            var overlay: Tensor?
            if !regions.regions.isEmpty {
                let composition = composition(request, regions: regions.regions, steps: s.steps)
                extra += composition.infotextFields(steps: s.steps)
                loop = try pipeline.regionLoop(s, composition: composition)
            } else if let image {
                extra.append(Infotext.Field("Denoising strength", String(request.denoisingStrength)))
                if let mask {
                    extra.append(Infotext.Field("Mask blur", String(Int(request.maskBlur))))
                    let blurred = Mask.blurred(mask, radius: request.maskBlur)
                    overlay = blurred
                    loop = try pipeline.inpaintingLoop(s, image: image.tensor(), mask: blurred, strength: request.denoisingStrength)
                } else {
                    loop = try pipeline.imageToImageLoop(s, image: image.tensor(), strength: request.denoisingStrength)
                }
            } else {
                loop = try pipeline.denoisingLoop(s)
            }
            condition.withLock {
                state.jobNumber = index
                state.samplingStep = 0
                state.samplingSteps = loop.stepCount
            }
            while let report = loop.next() {
                let stop = condition.withLock {
                    state.samplingStep = report.index + 1
                    state.latents = report.latents
                    state.circular = s.circular
                    return interruptRequested || skipRequested
                }
                if stop { break }
            }
            var picture = RGBImage(decoded: try pipeline.decode(loop.latents, circular: s.circular, method: s.decodeMethod))
            if let image, let overlay {
                picture = Mask.composite(generated: picture, original: image, mask: overlay)
            }
            let text = try pipeline.parameters(s, modelHash: hash, extra: extra,
                                               otherPrompts: request.regions.flatMap { [$0.prompt, $0.negativePrompt] })
            let url = condition.withLock { () -> URL in
                defer { outputCounter += 1 }
                return configuration.outputs.appendingPathComponent(String(format: "%05d-%llu.png", outputCounter, s.seed))
            }
            var chunks = [(key: "parameters", value: text)]
            if !request.regions.isEmpty {
                chunks.append((key: "regions", value: try regionsText(request, masks: regions.masks, output: url)))
            }
            try PNG.write(picture, to: url, text: chunks)
            result.images.append(request.sendImages ? try Data(contentsOf: url) : Data())
            result.seeds.append(s.seed)
            result.infotexts.append(text)
            condition.withLock {
                state.imagesDone = index + 1
                updateRecord(runningID) { $0.images.append(url.lastPathComponent) }
            }
        }
        return result
    }

    /// The regions as `panorama compose` records them in the PNG's "regions" chunk; an uploaded
    /// mask is written beside the picture (`NAME-regionK.png`) and named relative to it, so
    /// `panorama compose --from-png` and the studio's "use these parameters" find it.
    private func regionsText(_ request: GenerationRequest, masks: [Int: RGBImage], output: URL) throws -> String {
        var objects: [JSONValue] = []
        for (k, region) in request.regions.enumerated() {
            var o: [String: JSONValue] = ["prompt": .string(region.prompt)]
            if let rect = region.rect { o["rect"] = .array(rect.map(JSONValue.number)) }
            if let mask = masks[k] {
                let name = output.deletingPathExtension().lastPathComponent + "-region\(k + 1).png"
                try PNG.write(mask, to: output.deletingLastPathComponent().appendingPathComponent(name))
                o["mask"] = .string(name)
            }
            if !region.negativePrompt.isEmpty { o["negative_prompt"] = .string(region.negativePrompt) }
            if let g = region.guidance { o["guidance"] = .number(g) }
            if region.weight != 1 { o["weight"] = .number(region.weight) }
            if region.feather > 0 { o["feather"] = .number(region.feather) }
            objects.append(.object(o))
        }
        return JSONValue.array(objects).text
    }

    /// One past the highest `NNNNN-` prefix in `folder`, as A1111 numbers its outputs.
    static func nextOutputNumber(in folder: URL) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        let numbers = names.compactMap { name -> Int? in
            guard let dash = name.firstIndex(of: "-") else { return nil }
            return Int(name[..<dash])
        }
        return (numbers.max() ?? -1) + 1
    }
}
