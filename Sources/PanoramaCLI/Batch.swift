import ArgumentParser
import Foundation
import Imaging
import Renderer

/// `--count N`: N pictures with seeds s, s+1, …, s+N−1 (A1111's batch count) from one loaded
/// model, each with its own PNG parameters; `--grid` adds a contact sheet.
extension GenerationOptions {
    /// The batch's pictures: their seeds and output files, all checked before any work. One
    /// picture keeps the single-render names; several are `NAME-SEED.png` after `--output
    /// NAME.png`, or `defaultBase(seed)` each.
    func batchOutputs(seed: UInt64, defaultBase: (UInt64) -> String) throws -> [(seed: UInt64, url: URL)] {
        guard count >= 1 && count <= 10_000 else { throw ValidationError("--count must be between 1 and 10000, not \(count)") }
        if grid && count == 1 { throw ValidationError("--grid needs --count of 2 or more") }
        if let resumed = try resumedOutputs(seed: seed) { return resumed }
        guard count > 1 else { return [(seed, try outputLocation(defaultBase: defaultBase(seed)))] }
        guard seed <= UInt64.max - UInt64(count - 1) else {
            throw ValidationError("--seed \(seed) leaves no room for \(count) consecutive seeds")
        }
        var outputs: [(seed: UInt64, url: URL)] = []
        for k in 0..<count {
            let s = seed + UInt64(k)
            if let output {
                guard output.lowercased().hasSuffix(".png") else { throw ValidationError("--output must name a .png file, not \(output)") }
                let url = URL(fileURLWithPath: output).deletingPathExtension()
                outputs.append((s, try checkedWritable(URL(fileURLWithPath: url.path + "-\(s).png"), replace: overwrite)))
            } else {
                outputs.append((s, try outputLocation(defaultBase: defaultBase(s))))
            }
        }
        if grid { _ = try checkedWritable(gridLocation(outputs), replace: overwrite || output == nil) }
        return outputs
    }

    /// The contact sheet's file: `NAME-grid.png` after `--output NAME.png`, else beside the first
    /// picture.
    func gridLocation(_ outputs: [(seed: UInt64, url: URL)]) -> URL {
        if let output { return URL(fileURLWithPath: URL(fileURLWithPath: output).deletingPathExtension().path + "-grid.png") }
        let first = outputs[0].url.deletingPathExtension()
        return URL(fileURLWithPath: first.path + "-grid.png")
    }

    /// Renders every picture of the batch with `render` (given the settings with its seed, its
    /// output and progress; it returns the written picture), prints each path, then writes the grid
    /// when asked, with the first picture's parameters.
    func forEachPicture(_ settings: PanoramaSettings, outputs: [(seed: UInt64, url: URL)], progress: inout ProgressReporter,
                        render: (PanoramaSettings, URL, inout ProgressReporter) throws -> (RGBImage, parameters: String)) throws {
        var pictures: [RGBImage] = []
        var firstParameters = ""
        try beginSession(seed: settings.seed, outputs: outputs)
        let done = ResumeSession.current?.resumed?.record.picture ?? 0
        for (k, (seed, url)) in outputs.enumerated() {
            ResumeSession.current?.picture = k
            if k < done {
                // finished before the stop (a resumed batch)
                guard Job.isPrimary else { continue }
                print(url.path)
                if grid { pictures.append(try PNG.read(url)) }
                if k == 0 { firstParameters = (try? PNG.textChunks(of: url))?["parameters"] ?? "" }
                continue
            }
            var s = settings
            s.seed = seed
            if outputs.count > 1 {
                progress.picture = (k, outputs.count)
                progress.note("picture \(k + 1) of \(outputs.count): seed \(seed)")
            }
            let (picture, parameters) = try render(s, url, &progress)
            if Job.isPrimary { print(url.path) }
            if k == 0 { firstParameters = parameters }
            if grid { pictures.append(picture) }
        }
        if grid && Job.isPrimary {
            let url = gridLocation(outputs)
            try PNG.write(RGBImage.contactSheet(pictures), to: url, text: [(key: "parameters", value: firstParameters)])
            print(url.path)
        }
        endSession(progress: progress)
    }
}
