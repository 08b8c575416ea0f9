import ArgumentParser

/// The `panorama` command line.
@main
struct Panorama: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "panorama",
        abstract: "Wide images with Stable Diffusion and MultiDiffusion, on the CPU.",
        subcommands: [Render.self, Compose.self, Upscale.self, Outpaint.self, Inpaint.self, Info.self, Tokenize.self, Presets.self, Serve.self, Resume.self],
        defaultSubcommand: Render.self)
}
