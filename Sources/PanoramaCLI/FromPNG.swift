import ArgumentParser
import Foundation
import Imaging
import Renderer
import Schedulers

/// The generation parameters of the --from-png file.
struct RecalledPNG {
    let url: URL
    let infotext: Infotext
    let settings: RecalledSettings
    /// All of the PNG's text chunks (compose reads its `regions`).
    let chunks: [String: String]
    /// The file `recalled()` read last (a command runs once per process, on one thread).
    nonisolated(unsafe) static var lastRead: (path: String, png: RecalledPNG)?

    /// Reads `path`'s `parameters` chunk; an error says what is missing or unreadable.
    init(path: String) throws {
        url = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
        chunks = try PNG.textChunks(of: url)
        guard let text = chunks["parameters"] else {
            let found = chunks.keys.sorted()
            let comfy = chunks["prompt"] != nil ? " (it has a ComfyUI graph; `panorama info` shows what it holds)" : ""
            throw ValidationError("--from-png \(url.path) has no \"parameters\" text chunk"
                + (found.isEmpty ? ", and no text at all" : "; its text chunks: \(found.joined(separator: ", "))") + comfy)
        }
        infotext = Infotext(parsing: text)
        do { settings = try infotext.recalledSettings() } catch {
            throw ValidationError("--from-png \(url.path): \(error)")
        }
    }

    /// The recorded sampler; one this program lacks is an error naming it and the ones it has.
    func sampler() throws -> Sampler? {
        do { return try settings.sampler() } catch {
            throw ValidationError("--from-png \(url.path): \(error); pass --scheduler NAME to choose one (\(Sampler.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
    }
}

extension GenerationOptions {
    /// The --from-png file's parameters, nil without --from-png; read once per process, as several
    /// options consult it.
    func recalled() throws -> RecalledPNG? {
        guard let fromPng else { return nil }
        if let cached = RecalledPNG.lastRead, cached.path == fromPng { return cached.png }
        let png = try RecalledPNG(path: fromPng)
        RecalledPNG.lastRead = (fromPng, png)
        return png
    }
}
