import Foundation
import Tokenization
import Weights

/// Files the targets need besides their input, read once from the repository's test fixtures.
enum Fixtures {
    /// The repository root: PANORAMA_ROOT, or found from this source file's path.
    static let root: URL = {
        if let root = ProcessInfo.processInfo.environment["PANORAMA_ROOT"] { return URL(fileURLWithPath: root) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }()

    static func url(_ path: String) -> URL { root.appendingPathComponent("Tests/Fixtures/" + path) }

    nonisolated(unsafe) static var tokenizer: CLIPTokenizer!
    nonisolated(unsafe) static var unet: WeightSet!
    nonisolated(unsafe) static var textEncoder: WeightSet!
    nonisolated(unsafe) static var vae: WeightSet!
    nonisolated(unsafe) static var taesd: WeightSet!

    /// A private scratch folder for inputs that the readers only take as files.
    static let scratch: URL = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base).appendingPathComponent("panorama-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: Fixtures.scratch) }
        return url
    }()

    static func prepare() {
        do {
            tokenizer = try CLIPTokenizer(directory: url("models/tiny-sd1/tokenizer"))
            let model = url("models/tiny-sd1")
            unet = try DiffusersFolder.weights(in: model.appendingPathComponent("unet"), label: "unet")
            textEncoder = try DiffusersFolder.weights(in: model.appendingPathComponent("text_encoder"), label: "text_encoder")
            vae = try DiffusersFolder.weights(in: model.appendingPathComponent("vae"), label: "vae")
            taesd = try DiffusersFolder.weights(in: url("models/tiny-taesd/diffusers"), label: "taesd")
        } catch {
            FileHandle.standardError.write("cannot read the fixtures under \(root.path) (set PANORAMA_ROOT): \(error)\n".data(using: .utf8)!)
            exit(2)
        }
        _ = scratch
    }

    /// Writes `data` to the scratch file `name` and returns its URL.
    static func file(_ data: Data, name: String) throws -> URL {
        let url = scratch.appendingPathComponent(name)
        try data.write(to: url)
        return url
    }
}
