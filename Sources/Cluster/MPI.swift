import CMPI
import Foundation
import Tensors

/// An MPI job's world: this process's rank, the number of processes, and the few collective
/// operations the renderer uses, on byte buffers.
///
/// MPI is loaded at run time (`dlopen`), so building needs no MPI and a plain run never touches
/// it; under `mpirun` the same binary loads Open MPI's or MPICH's library (see `MPI.start`).
/// Every reduction is done by the callers in a fixed order instead of by MPI, so results do not
/// depend on the number of processes. MPI's default error handler ends the whole job on a
/// communication failure, so no call here returns an error and none can hang on a dead peer.
public final class MPI: ProcessGroup, @unchecked Sendable {
    /// This process's rank, 0 ..< `size`.
    public let rank: Int
    /// Processes in the job.
    public let size: Int
    /// Processes of the job on this machine (for the default thread count), when the launcher says.
    public let localSize: Int?
    /// The library loaded and its ABI ("Open MPI" or "MPICH").
    public let library: String

    /// Bytes this process sent and received in collectives so far (for benchmarks and reports).
    public private(set) var bytesSent = 0, bytesReceived = 0

    /// Rank 0: the process that prints and writes files.
    public var isPrimary: Bool { rank == 0 }

    /// The launcher's variables that mark a process started by `mpirun`/`mpiexec` (Open MPI,
    /// PMIx, MPICH's Hydra, Slurm's PMI).
    public static let launcherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"]

    /// Whether this process was started by an MPI launcher.
    public static func launched(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        launcherVariables.contains { environment[$0] != nil }
    }

    /// The libraries to try, the launcher's own first: `PANORAMA_MPI_LIBRARY` alone when set;
    /// Open MPI's under Open MPI's mpirun, MPICH's under Hydra's mpiexec (a library of the other
    /// kind would start a job of one process in every process).
    public static func candidates(_ environment: [String: String]) -> [String] {
        if let path = environment["PANORAMA_MPI_LIBRARY"] { return [path] }
        let openMPI = ["libmpi.so.40"], mpich = ["libmpich.so.12", "libmpi.so.12"]
        let preferred = environment["OMPI_COMM_WORLD_SIZE"] != nil ? openMPI + mpich : mpich + openMPI
        return preferred + ["libmpi.so", "libmpich.so"]
    }

    /// Loads MPI (see `candidates`) and initialises it. Call once, only in a process an MPI
    /// launcher started.
    public static func start(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> MPI {
        var errors: [String] = []
        for path in candidates(environment) {
            var error = [CChar](repeating: 0, count: 1024)
            if panorama_mpi_load(path, &error, error.count) == 0 { errors = []; break }
            errors.append(cString(error))
        }
        guard errors.isEmpty else {
            throw MPIError.unavailable(errors.joined(separator: "; ") + "; install Open MPI (Debian: apt install openmpi-bin) or MPICH (apt install mpich), or set PANORAMA_MPI_LIBRARY to its libmpi.so")
        }
        var rank: Int32 = 0, size: Int32 = 0
        let status = panorama_mpi_init(&rank, &size)
        guard status == 0 else { throw MPIError.call("MPI_Init_thread", errorString(status)) }
        // A library that is not the launcher's starts each process as a job of its own.
        let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"].lazy.compactMap { environment[$0].flatMap(Int.init) }.first
        if let launched, launched != Int(size) {
            throw MPIError.unavailable("the launcher started \(launched) processes but \(String(cString: panorama_mpi_library())) sees a job of \(size): it is not the launcher's MPI (mpirun and the library must come from the same MPI; set PANORAMA_MPI_LIBRARY)")
        }
        let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"].lazy
            .compactMap { environment[$0].flatMap(Int.init) }.first { $0 >= 1 }
        return MPI(rank: Int(rank), size: Int(size), localSize: local,
                   library: "\(String(cString: panorama_mpi_library())) (\(String(cString: panorama_mpi_abi())))")
    }

    private init(rank: Int, size: Int, localSize: Int?, library: String) {
        self.rank = rank
        self.size = size
        self.localSize = localSize
        self.library = library
    }

    private static func errorString(_ code: Int32) -> String {
        var text = [CChar](repeating: 0, count: 1024)
        panorama_mpi_error_string(code, &text, text.count)
        return cString(text)
    }

    /// A failed call ends the job: the other processes are waiting in the same collective.
    private func check(_ status: Int32, _ call: String) {
        if status != 0 { abort(message: "\(call) failed: \(Self.errorString(status))", code: 1) }
    }

    /// Every process's `bytes`, in rank order, on every process. Any sizes; buffers over 2 GiB
    /// in all go in several rounds (MPI counts are 32-bit).
    public func allGather(_ bytes: [UInt8]) -> [[UInt8]] {
        var mine = Int64(bytes.count)
        var sizes = [Int64](repeating: 0, count: size)
        sizes.withUnsafeMutableBytes { out in
            check(panorama_mpi_allgather(&mine, 8, out.baseAddress), "MPI_Allgather")
        }
        var result = sizes.map { [UInt8](repeating: 0, count: Int($0)) }
        bytesSent += bytes.count
        bytesReceived += result.indices.reduce(0) { $0 + ($1 == rank ? 0 : result[$1].count) }
        var sent = [Int](repeating: 0, count: size)
        let roundLimit = Int(Int32.max) / size
        while zip(sent, sizes).contains(where: { $0 < Int($1) }) {
            let counts = (0..<size).map { min(Int(sizes[$0]) - sent[$0], roundLimit) }
            var displacements = [Int32](repeating: 0, count: size)
            for r in 1..<max(1, size) { displacements[r] = displacements[r - 1] + Int32(counts[r - 1]) }
            var round = [UInt8](repeating: 0, count: counts.reduce(0, +))
            bytes.withUnsafeBytes { send in
                round.withUnsafeMutableBytes { receive in
                    let status = panorama_mpi_allgatherv(send.baseAddress.map { $0 + sent[rank] }, Int32(counts[rank]),
                                                         receive.baseAddress, counts.map(Int32.init), displacements)
                    check(status, "MPI_Allgatherv")
                }
            }
            for r in 0..<size where counts[r] > 0 {
                let from = Int(displacements[r])
                result[r].replaceSubrange(sent[r]..<(sent[r] + counts[r]), with: round[from..<(from + counts[r])])
                sent[r] += counts[r]
            }
        }
        return result
    }

    /// Sends `outgoing[r]` to rank `r` and returns what every rank sent here: the sizes first
    /// (every rank learns the whole matrix), then for each shift k = 1 ..< size a pairwise
    /// exchange with rank + k and rank − k, in the same number of rounds of at most 1 GiB on
    /// every rank, so every send meets its receive and nothing can deadlock.
    public func exchange(_ outgoing: [[UInt8]]) -> [[UInt8]] {
        precondition(outgoing.count == size, "exchange: one buffer per rank")
        var row = outgoing.map { Int64($0.count) }
        row[rank] = 0
        let matrix = allGather(row.withUnsafeBytes { Array($0) }).map { bytes in
            bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)).map(Int.init) }
        }
        var incoming = [[UInt8]](repeating: [], count: size)
        let chunk = 1 << 30
        for shift in 1..<max(1, size) {
            let to = (rank + shift) % size, from = (rank - shift + size) % size
            // the largest message of this shift anywhere sets its rounds
            let largest = (0..<size).map { matrix[$0][($0 + shift) % size] }.max() ?? 0
            var received = [UInt8](repeating: 0, count: matrix[from][rank])
            for round in 0..<((largest + chunk - 1) / chunk) {
                let start = round * chunk
                let sendCount = max(0, min(chunk, outgoing[to].count - start))
                let receiveCount = max(0, min(chunk, received.count - start))
                outgoing[to].withUnsafeBytes { send in
                    received.withUnsafeMutableBytes { receive in
                        let status = panorama_mpi_sendrecv(send.baseAddress.map { $0 + min(start, send.count) }, Int32(sendCount), Int32(to),
                                                           receive.baseAddress.map { $0 + min(start, receive.count) }, Int32(receiveCount),
                                                           Int32(from), Int32(shift))
                        check(status, "MPI_Sendrecv")
                    }
                }
            }
            bytesSent += outgoing[to].count
            bytesReceived += received.count
            incoming[from] = received
        }
        return incoming
    }

    /// Waits until every process gets here.
    public func barrier() { check(panorama_mpi_barrier(), "MPI_Barrier") }

    /// Ends every process of the job: prints `message` naming this rank, then MPI_Abort.
    public func abort(message: String, code: Int32) -> Never {
        FileHandle.standardError.write("panorama: rank \(rank) of \(size): \(message)\n".data(using: .utf8)!)
        panorama_mpi_abort(code == 0 ? 1 : code)
        exit(code == 0 ? 1 : code)
    }

    /// Ends MPI in this process (after the last collective).
    public func finalize() { _ = panorama_mpi_finalize() }
}

/// A NUL-terminated C string in a buffer.
private func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

public enum MPIError: Error, CustomStringConvertible {
    case unavailable(String)
    case call(String, String)

    public var description: String {
        switch self {
        case .unavailable(let why): return "started by an MPI launcher, but MPI is unavailable: \(why)"
        case .call(let name, let why): return "\(name) failed: \(why)"
        }
    }
}
