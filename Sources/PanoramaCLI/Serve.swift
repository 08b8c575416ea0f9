import ArgumentParser
import Dispatch
import Foundation
import Server
import Tensors

/// `panorama serve`: AUTOMATIC1111's HTTP API on the renderer.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve AUTOMATIC1111's HTTP API (txt2img, img2img, models, progress, …) on this machine.",
        discussion: """
            One model stays loaded between jobs (switch it with POST /sdapi/v1/options \
            {"sd_model_checkpoint": NAME}); jobs run one at a time from a bounded queue, and every \
            picture is also written with its parameters into --outputs. Width and height beyond \
            the model's window make a MultiDiffusion panorama.

            Examples:
              panorama serve
              panorama serve --models-dir ~/models --lora-dir ~/models/lora --outputs ~/panoramas
              panorama serve --host 0.0.0.0 --api-auth alice:secret
            """)

    @Option(name: .long, help: "Address to listen on (default 127.0.0.1: this machine only).")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port (default 7860, as AUTOMATIC1111; 0 picks a free one).")
    var port = 7860

    @Option(name: .long, help: ArgumentHelp("HTTP basic authentication for every request.", valueName: "user:pass"))
    var apiAuth: String?

    @Flag(name: .long, help: "Allow a non-loopback --host without --api-auth.")
    var insecure = false

    @Option(name: .long, help: ArgumentHelp("Diffusers folders and .safetensors/.ckpt files offered besides the bundled model.", valueName: "dir"))
    var modelsDir: String?

    @Option(name: .long, help: ArgumentHelp("Where <lora:NAME:…> tags find NAME (default: the project's models/lora).", valueName: "dir"))
    var loraDir: String?

    @Option(name: .customLong("embeddings-dir"), help: ArgumentHelp("Textual-inversion embeddings (default: the project's models/embeddings).", valueName: "dir"))
    var embeddingsDir: String?

    @Option(name: .long, help: ArgumentHelp("Where every job's PNGs are written (default: outputs).", valueName: "dir"))
    var outputs = "outputs"

    @Option(name: .long, help: "Jobs that may wait behind the running one; more are answered 429 (default 16).")
    var queueSize = 16

    @Option(name: .long, help: "Largest width or height a request may ask for, in pixels (default 16384).")
    var maxSide = 16384

    @Option(name: .long, help: "Largest width x height a request may ask for, in megapixels (default 64).")
    var maxMegapixels: Double = 64

    @Option(name: .long, help: "Compute threads (default 2).")
    var threads: Int?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard queueSize >= 1 else { throw ValidationError("--queue-size must be at least 1") }
        guard maxSide >= 8 else { throw ValidationError("--max-side must be at least 8") }
        guard maxMegapixels.isFinite && maxMegapixels > 0 else { throw ValidationError("--max-megapixels must be more than 0") }
        do {
            try PanoramaServer.checkExposure(host: host, apiAuth: apiAuth, insecure: insecure)
        } catch let error as APIError {
            throw ValidationError(error.body["detail"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? error.description)
        }
    }

    func run() throws {
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            Compute.threads = threads
        }
        Compute.retainFreedMemory()
        func folder(_ path: String?) -> URL? { path.map { URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath) } }
        let projectModels = Resources.defaultModel?.deletingLastPathComponent()
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.apiAuth = apiAuth
        configuration.defaultModel = Resources.defaultModel
        configuration.tokenizer = Resources.defaultModel?.appendingPathComponent("tokenizer")
        configuration.modelsDirectory = folder(modelsDir)
        configuration.loraDirectory = folder(loraDir) ?? projectModels?.appendingPathComponent("lora")
        configuration.embeddingsDirectory = folder(embeddingsDir) ?? projectModels?.appendingPathComponent("embeddings")
        configuration.outputs = folder(outputs)!
        configuration.queueSize = queueSize
        configuration.limits = SizeLimits(maxSide: maxSide, maxPixels: Int(maxMegapixels * 1_000_000))
        let engine: Engine
        do { engine = try Engine(configuration: configuration) } catch {
            throw ValidationError("cannot start: \(error)")
        }
        let server = PanoramaServer(engine: engine)
        let model = engine.currentModel?.title ?? "?"
        let outputsPath = configuration.outputs.path
        let failure = ServeFailure()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                try await server.run { port in
                    let line = "panorama serve: http://\(host.contains(":") ? "[\(host)]" : host):\(port)/sdapi/v1/ (model \(model), outputs \(outputsPath))\n"
                    FileHandle.standardOutput.write(Data(line.utf8))
                }
            } catch {
                failure.set("\(error)")
            }
            done.signal()
        }
        done.wait()
        if let message = failure.message { throw ValidationError("the server stopped: \(message)") }
    }
}

/// The error that ended the server, handed from its task to the command.
private final class ServeFailure: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: String?
    var message: String? { lock.withLock { stored } }
    func set(_ message: String) { lock.withLock { stored = message } }
}
