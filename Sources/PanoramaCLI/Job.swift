import ArgumentParser
import Cluster
import Foundation
import Models
import Renderer
import Tensors

/// This process's place in an MPI job (`mpirun -np N panorama …`); a single process otherwise.
///
/// Every process parses the same arguments, loads the model, encodes the prompts and runs the
/// whole loop; the UNet batches of each step (`GroupDistributor`) and the tiled VAE's rows of
/// tiles (`VAETiling.processes`) are divided, and everything else is computed identically
/// everywhere. Rank 0 alone prints and writes files. A process that
/// fails ends the job (MPI_Abort) with a message naming its rank, so none waits forever for it.
enum Job {
    nonisolated(unsafe) private(set) static var world: MPI?

    /// Whether this process prints and writes files: rank 0, or a process on its own.
    static var isPrimary: Bool { world?.isPrimary ?? true }

    /// Commands that may run as an MPI job.
    static let distributedCommands: [ParsableCommand.Type] = [Render.self, Compose.self, Upscale.self, Outpaint.self,
                                                              Inpaint.self, Resume.self]

    /// Starts MPI when an MPI launcher started this process.
    static func start(command: ParsableCommand) throws {
        guard MPI.launched() else { return }
        let world = try MPI.start()
        self.world = world
        guard world.size > 1 else { return }
        guard distributedCommands.contains(where: { $0 == type(of: command) }) else {
            let names = distributedCommands.map { $0._commandName }.joined(separator: ", ")
            throw ValidationError("panorama \(type(of: command)._commandName) runs in one process; start it without mpirun (commands that run as an MPI job: \(names))")
        }
        // Processes on one machine share its cores unless --threads says otherwise.
        let cores = ProcessInfo.processInfo.activeProcessorCount
        Compute.threads = max(1, cores / max(1, world.localSize ?? 1))
    }

    /// The processes that share the pipeline's work: the MPI job's when it has several.
    static var processes: (any ProcessGroup)? { world.flatMap { $0.size > 1 ? $0 : nil } }

    /// A line on standard error about the job, from rank 0 (nothing for a single process).
    static var summary: String? {
        guard let world, world.size > 1 else { return nil }
        return "MPI: \(world.size) processes (\(world.library)), \(Compute.threads) thread\(Compute.threads == 1 ? "" : "s") each"
    }

    /// Rank 0's `value` on every process (a random seed must be the same everywhere).
    static func agreed(_ value: UInt64) -> UInt64 {
        guard let world, world.size > 1 else { return value }
        let bytes = world.allGather(withUnsafeBytes(of: value.littleEndian) { Array($0) })[0]
        var chosen: UInt64 = 0
        withUnsafeMutableBytes(of: &chosen) { $0.copyBytes(from: bytes) }
        return UInt64(littleEndian: chosen)
    }

    /// Whether `condition` holds in any process of the job.
    static func anyProcess(_ condition: Bool) -> Bool {
        guard let world, world.size > 1 else { return condition }
        return world.allGather([condition ? 1 : 0]).contains([1])
    }

    /// After the command succeeded.
    static func finish() { world?.finalize() }

    /// After the command failed: in a job of several processes every process is ended, with the
    /// message (and this rank) on standard error; alone, nothing to do.
    static func fail(_ error: Error, message: String, code: Int32) {
        guard let world, world.size > 1 else { return }
        world.abort(message: message.isEmpty ? "\(error)" : message, code: code)
    }
}

extension VAETiling {
    /// `VAETiling()`, or with `PANORAMA_VAE_TILE_SIDE=N` tiles of N pixels and no whole-image
    /// shortcut: a test hook, so that tiny models' small pictures run many tiles.
    static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> VAETiling {
        var tiling = VAETiling()
        if let side = environment["PANORAMA_VAE_TILE_SIDE"].flatMap(Int.init), side > 0 {
            tiling.tileSide = side
            tiling.wholeImagePixels = 0
        }
        return tiling
    }
}
