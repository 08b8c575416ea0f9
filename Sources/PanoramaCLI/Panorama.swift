import ArgumentParser

/// The `panorama` command line.
@main
struct Panorama: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "panorama",
        abstract: "Wide images with Stable Diffusion and MultiDiffusion, on the CPU.",
        discussion: "Render, compose, upscale, outpaint, inpaint and resume also run as an MPI job, one picture spread over many processes and machines: mpirun -np N panorama render … (see README, \"Many processes and machines: MPI\").",
        subcommands: [Render.self, Compose.self, Upscale.self, Outpaint.self, Inpaint.self, Info.self, Tokenize.self, Presets.self, Serve.self, Resume.self],
        defaultSubcommand: Render.self)

    /// ArgumentParser's `main`, with the MPI job around the command (`Job`).
    static func main() {
        do {
            var command = try parseAsRoot()
            try Job.start(command: command)
            try command.run()
            Job.finish()
        } catch {
            let code = exitCode(for: error).rawValue
            if code == 0 { Job.finish() } else { Job.fail(error, message: fullMessage(for: error), code: code) }
            exit(withError: error)
        }
    }
}
