import ArgumentParser
import Foundation
import Models
import Renderer
import Tensors
import Weights

/// `panorama [render]`: text to panorama with MultiDiffusion.
struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a panorama from a prompt (the default command).",
        discussion: """
            Overlapping windows of the model's native size (512x512 for Stable Diffusion 1.x/2.x) \
            are denoised together and averaged at every step, so the whole canvas forms one \
            coherent image of any width.

            Examples:
              panorama --W 2048 --H 512 --prompt "snowy mountains at sunset"
              panorama --preset wrap-360 --prompt "a calm sea under a starry night sky"
              panorama --model ~/models/stable-diffusion-v1-5 --W 4096 --H 512 --prompt "..." --seed 1234
            """)

    @Option(name: .customLong("W"), help: ArgumentHelp("Width in pixels, a multiple of 8 (default 2048).", valueName: "pixels"))
    var width: Int?

    @Option(name: .customLong("H"), help: ArgumentHelp("Height in pixels, a multiple of 8 (default 512).", valueName: "pixels"))
    var height: Int?

    @Flag(name: .long, help: "360° panorama: the right edge wraps to the left.")
    var circular = false

    @OptionGroup var options: GenerationOptions

    @Option(name: .long, help: ArgumentHelp("Start from these latents (safetensors, float32 tensor \"latents\" [1, 4, H/8, W/8]) instead of the seed.", valueName: "file"))
    var latentsIn: String?

    @Option(name: .long, help: ArgumentHelp("Also save the final latents (safetensors, tensor \"latents\").", valueName: "file"))
    var latentsOut: String?

    func run() throws {
        var progress = ProgressReporter(quiet: options.quiet)
        let (modelURL, preset) = try options.setUp()
        let png = try options.recalled()?.settings
        var settings = try options.settings(width: width ?? png?.width ?? preset?.width ?? 2048,
                                            height: height ?? png?.height ?? preset?.height ?? 512,
                                            circular: circular || (preset?.circular ?? false), preset: preset)
        let size = "\(settings.width)x\(settings.height)"
        let outputs = try options.batchOutputs(seed: settings.seed) { "panorama-\(size)-\($0)" }
        guard latentsIn == nil || outputs.count == 1 else {
            throw ValidationError("--latents-in gives every picture of a batch the same start; use --count 1")
        }
        let latentsOutURL = try latentsOut.map { try options.checkedWritable(URL(fileURLWithPath: $0), replace: true) }
        guard latentsOutURL == nil || outputs.count == 1 else { throw ValidationError("--latents-out saves one picture's latents; use --count 1") }

        let pipeline = try options.loadPipeline(modelURL, settings: &settings, prompts: [settings.prompt, settings.negativePrompt],
                                                progress: progress)
        let model = pipeline.model
        let startLatents = try latentsIn.map { try readLatents($0) }
        if let startLatents { try pipeline.checkLatents(startLatents, for: settings) }

        try options.forEachPicture(settings, outputs: outputs, progress: &progress) { settings, outputURL, progress in
            var loop = try pipeline.denoisingLoop(settings, latents: startLatents)
            progress.note("\(size): \(settings.spotDiffusion ? "about " : "")\(loop.views.count) windows x \(loop.stepCount) steps")
            let parameters = try options.parameters(settings, model: model)
            let picture = try options.finish(&loop, pipeline: pipeline, settings: settings, progress: &progress, output: outputURL,
                                             parameters: parameters, denoised: { latents in
                guard let latentsOutURL, Job.isPrimary else { return }
                try SafeTensorsWriter.write([(name: "latents", tensor: latents)], dtype: .f32,
                                            metadata: ["seed": String(settings.seed), "prompt": settings.prompt],
                                            to: latentsOutURL)
            })
            return (picture, parameters)
        }
    }

    private func readLatents(_ path: String) throws -> Tensor {
        let file = try SafeTensorsFile(url: URL(fileURLWithPath: path))
        guard file.contains("latents") else {
            throw ValidationError("\(path) has no tensor named \"latents\" (it has: \(file.names.joined(separator: ", ")))")
        }
        return try file.tensor("latents")
    }
}
