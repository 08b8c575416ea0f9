import ArgumentParser
import Foundation
import Imaging
import Models
import Renderer

/// `panorama upscale`: enlarge an image and let the model add detail, window by window.
struct Upscale: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enlarge an image and add detail with the model, tile by tile.",
        discussion: """
            The image is resized (Lanczos, in linear light), encoded by the VAE in tiles, noised \
            to --strength (img2img), denoised by overlapping MultiDiffusion windows and decoded in \
            tiles. The tiled VAE normalises with whole-image statistics, so tiles leave no seams \
            and memory stays bounded however large the image.

            Examples:
              panorama upscale --input panorama.png --scale 2 --prompt "snowy mountains at sunset"
              panorama upscale --input photo.png --W 2048 --prompt "a lake" --strength 0.3 --steps 30
            """)

    @Option(name: .long, help: ArgumentHelp("The image to enlarge: PNG, JPEG or WebP (PNG 8 or 16 bits, grey, RGB, RGBA or palette; JPEG turned upright by its EXIF orientation; alpha is dropped) (default: the --from-png file).", valueName: "file"))
    var input: String?

    @Option(name: .long, help: "Enlargement factor; the size is rounded to multiples of 8 (default 2).")
    var scale: Double?

    @Option(name: .customLong("W"), help: ArgumentHelp("Target width instead of --scale (the height follows the aspect ratio unless --H is given).", valueName: "pixels"))
    var width: Int?

    @Option(name: .customLong("H"), help: ArgumentHelp("Target height instead of --scale.", valueName: "pixels"))
    var height: Int?

    @Option(name: .long, help: "How much to change: 0 keeps the image, 1 redraws it from noise (default 0.35).")
    var strength: Double?

    @Flag(name: .long, help: "The input is a 360° panorama: windows and the VAE wrap around its left and right edges.")
    var circular = false

    @OptionGroup var options: GenerationOptions

    func run() throws {
        var progress = ProgressReporter(quiet: options.quiet)
        let strength = try self.strength ?? options.recalled()?.settings.denoisingStrength ?? 0.35
        guard strength.isFinite && strength >= 0 && strength <= 1 else {
            throw ValidationError("--strength must be between 0 and 1, not \(strength)")
        }
        if let scale { guard scale.isFinite && scale > 0 else { throw ValidationError("--scale must be more than 0, not \(scale)") } }
        let (modelURL, preset) = try options.setUp()
        guard let input = input ?? options.fromPng else { throw ValidationError("missing --input FILE (PNG, JPEG or WebP; or --from-png FILE.png)") }
        let inputURL = URL(fileURLWithPath: input)
        let source = try ImageFile.read(inputURL)
        let (targetWidth, targetHeight) = targetSize(source)
        var settings = try options.settings(width: targetWidth, height: targetHeight, circular: circular, preset: preset)
        let stem = inputURL.deletingPathExtension().lastPathComponent
        let outputs = try options.batchOutputs(seed: settings.seed) { "\(stem)-upscaled-\(targetWidth)x\(targetHeight)-\($0)" }

        let pipeline = try options.loadPipeline(modelURL, settings: &settings, prompts: [settings.prompt, settings.negativePrompt],
                                                encoding: true, progress: progress)
        let model = pipeline.model

        progress.note("\(source.width)x\(source.height) -> \(targetWidth)x\(targetHeight): resizing and encoding")
        let image = source.resized(width: targetWidth, height: targetHeight).tensor()
        let extra = [Infotext.Field("Denoising strength", String(strength)),
                     Infotext.Field("Upscaled from", "\(source.width)x\(source.height)")]
        try options.forEachPicture(settings, outputs: outputs, progress: &progress) { settings, outputURL, progress in
            // the encode keeps a journal: a stop in it, and a resumed upscale, do not start it over
            let journal = options.vaeJournal(.encode, pipeline: pipeline, settings: settings, progress: progress)
            var loop = try options.withJournal(journal, .encode, loop: nil, progress: progress) {
                try pipeline.imageToImageLoop(settings, image: image, strength: strength, journal: journal)
            }
            if journal?.reusedResult == true { progress.note("encoding: the encoded input kept in \(journal!.directory.path) is used") }
            progress.note("\(settings.spotDiffusion ? "about " : "")\(loop.views.count) windows x \(loop.stepCount) of \(settings.steps) steps (strength \(strength))")
            let parameters = try options.parameters(settings, model: model, extra: extra)
            let picture = try options.finish(&loop, pipeline: pipeline, settings: settings, progress: &progress, output: outputURL,
                                             parameters: parameters, inputs: [image])
            return (picture, parameters)
        }
    }

    /// --W/--H when given (one of them: the other from the aspect ratio), else the input times
    /// --scale; computed sizes are rounded to multiples of 8, explicit ones are checked later.
    func targetSize(_ image: RGBImage) -> (Int, Int) {
        func rounded(_ x: Double) -> Int { max(8, Int((x / 8).rounded()) * 8) }
        let aspect = Double(image.height) / Double(image.width)
        switch (width, height) {
        case let (w?, h?): return (w, h)
        case let (w?, nil): return (w, rounded(Double(w) * aspect))
        case let (nil, h?): return (rounded(Double(h) / aspect), h)
        case (nil, nil):
            let s = scale ?? 2
            return (rounded(Double(image.width) * s), rounded(Double(image.height) * s))
        }
    }
}
