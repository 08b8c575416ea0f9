import Foundation
import Imaging
import Tensors
import Weights
import XCTest

/// `mpirun -np N panorama …` on one machine (issue 26): every command that runs as an MPI job
/// gives the same PNG, byte for byte, and the same final latents, bit for bit, with 1, 2 and 3
/// processes; the tiled VAE runs in tiles of 24 pixels (`PANORAMA_VAE_TILE_SIDE`) so that its rows
/// of tiles are really divided. A process that fails ends the job with its rank named, and a job
/// that loses a process keeps its last step's state, which one process then finishes.
final class MPICLITests: XCTestCase {
    static let tinyModel = CLITests.tinyModel
    var folder: URL!

    /// Open MPI's launcher (Debian's own name for it first: `mpirun` may be MPICH's when both are
    /// installed), or nil: the tests are then skipped, or fail under CI's PANORAMA_REQUIRE_MPI_TESTS=1.
    static let mpirun: String? = ["/usr/bin/mpirun.openmpi", "/usr/bin/mpirun", "/usr/local/bin/mpirun"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    override func setUpWithError() throws {
        guard Self.mpirun != nil else {
            if ProcessInfo.processInfo.environment["PANORAMA_REQUIRE_MPI_TESTS"] == "1" {
                XCTFail("mpirun is missing (apt install openmpi-bin)")
            }
            throw XCTSkip("mpirun is not installed")
        }
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("mpi-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    private var executable: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("panorama").path
    }

    /// `panorama arguments` alone (`processes` 1) or under `mpirun -np processes`, started.
    private func start(_ processes: Int, _ arguments: [String], mpmd: [String]? = nil,
                       launcher: String? = nil) throws -> (Process, Pipe) {
        let process = Process()
        if processes == 1 && mpmd == nil {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: launcher ?? Self.mpirun!)
            // Hydra runs any number of processes on one machine; Open MPI needs --oversubscribe
            var launch = (launcher == nil ? ["--oversubscribe"] : []) + ["-np", String(processes), executable] + arguments
            // MPMD: one more process with its own arguments (rank `processes`)
            if let mpmd { launch += [":", "-np", "1", executable] + mpmd }
            process.arguments = launch
        }
        process.currentDirectoryURL = folder
        var environment = ProcessInfo.processInfo.environment
        environment["PANORAMA_VAE_TILE_SIDE"] = "24"
        // CI runs as root in a container: Open MPI refuses root without these, and its
        // single-copy transport needs ptrace rights a container may not give.
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
        process.environment = environment
        let err = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = err
        try process.run()
        return (process, err)
    }

    @discardableResult
    private func run(_ processes: Int, _ arguments: [String], mpmd: [String]? = nil,
                     launcher: String? = nil) throws -> (status: Int32, stderr: String) {
        let (process, err) = try start(processes, arguments, mpmd: mpmd, launcher: launcher)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, stderr)
    }

    /// Runs `arguments` with 1, 2 and 3 processes, writing `out-N.png` and keeping the state (the
    /// final latents) in `out-N.state`, and checks that every run gives the same bytes.
    private func assertSameWithAnyNumberOfProcesses(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        var pictures: [Data] = [], latents: [[UInt32]] = []
        for n in 1...3 {
            let r = try run(n, arguments + ["-o", "out-\(n).png", "--state", "out-\(n).state", "--keep-state"])
            XCTAssertEqual(r.status, 0, "\(n) processes: \(r.stderr)", file: file, line: line)
            guard r.status == 0 else { return }
            if n > 1 {
                XCTAssertTrue(r.stderr.contains("MPI: \(n) processes"), r.stderr, file: file, line: line)
                // rank 0 alone reports: one "decoding" line
                XCTAssertEqual(r.stderr.components(separatedBy: "decoding").count, 2, r.stderr, file: file, line: line)
            }
            pictures.append(try Data(contentsOf: folder.appendingPathComponent("out-\(n).png")))
            let state = try SafeTensorsFile.open(folder.appendingPathComponent("out-\(n).state"))
            latents.append(try state.tensor("latents").data.map(\.bitPattern))
        }
        for n in 2...3 {
            XCTAssertEqual(latents[n - 1], latents[0], "latents with \(n) processes", file: file, line: line)
            XCTAssertEqual(pictures[n - 1], pictures[0], "PNG with \(n) processes", file: file, line: line)
        }
    }

    func testRenderIsIdenticalWithAnyNumberOfProcesses() throws {
        try assertSameWithAnyNumberOfProcesses(["render", "--model", Self.tinyModel, "--W", "1024", "--H", "512",
                                                "--prompt", "a lake", "--steps", "3", "--seed", "5", "--scheduler", "euler-a",
                                                "--noise-fusion", "per-window"])
    }

    func testSpotDiffusionIsIdenticalWithAnyNumberOfProcesses() throws {
        try assertSameWithAnyNumberOfProcesses(["render", "--model", Self.tinyModel, "--W", "1536", "--H", "512",
                                                "--prompt", "a lake", "--steps", "3", "--seed", "8", "--scheduler", "dpm++2m",
                                                "--spot"])
    }

    func testThreeSixtyIsIdenticalWithAnyNumberOfProcesses() throws {
        try assertSameWithAnyNumberOfProcesses(["render", "--model", Self.tinyModel, "--W", "1024", "--H", "512",
                                                "--prompt", "a lake", "--steps", "3", "--seed", "6", "--circular"])
    }

    func testComposeIsIdenticalWithAnyNumberOfProcesses() throws {
        try assertSameWithAnyNumberOfProcesses(["compose", "--model", Self.tinyModel, "--W", "1024", "--H", "512",
                                                "--prompt", "a sunny sky", "--region", "0,0,0.25,1:a calm sea",
                                                "--region", "0.5,0.2,0.4,0.7:a lighthouse", "--steps", "4", "--seed", "9",
                                                "--stride", "16", "--scheduler", "euler-a"])
    }

    func testUpscaleIsIdenticalWithAnyNumberOfProcesses() throws {
        var pixels: [UInt8] = []
        for y in 0..<256 { for x in 0..<320 { pixels += [UInt8(x % 256), UInt8(y % 256), UInt8((x * y) % 256)] } }
        try PNG.write(RGBImage(width: 320, height: 256, pixels: pixels), to: folder.appendingPathComponent("in.png"))
        try assertSameWithAnyNumberOfProcesses(["upscale", "--model", Self.tinyModel, "--input", "in.png", "--scale", "2",
                                                "--prompt", "hills", "--steps", "4", "--strength", "0.5", "--seed", "3",
                                                "--stride", "16"])
    }

    /// The same binary under MPICH's launcher (Hydra) loads MPICH's library (the other ABI).
    func testMPICHGivesTheSamePicture() throws {
        let hydra = "/usr/bin/mpirun.mpich"
        guard FileManager.default.isExecutableFile(atPath: hydra) else {
            if ProcessInfo.processInfo.environment["PANORAMA_REQUIRE_MPI_TESTS"] == "1" {
                XCTFail("MPICH is missing (apt install mpich)")
            }
            throw XCTSkip("MPICH is not installed")
        }
        let arguments = ["render", "--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "a lake",
                         "--steps", "2", "--seed", "5", "--scheduler", "euler-a"]
        XCTAssertEqual(try run(1, arguments + ["-o", "alone.png"]).status, 0)
        let r = try run(2, arguments + ["-o", "mpich.png"], launcher: hydra)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("(MPICH)"), r.stderr)
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("alone.png")),
                       try Data(contentsOf: folder.appendingPathComponent("mpich.png")))
    }

    func testAFailingProcessEndsTheJobNamingItsRank() throws {
        let good = ["render", "--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "a lake",
                    "--steps", "3", "--seed", "5", "-o", "x.png"]
        var bad = good
        bad[2] = folder.appendingPathComponent("missing-model").path
        let started = Date()
        let r = try run(1, good, mpmd: bad)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("rank 1 of 2"), r.stderr)
        XCTAssertTrue(r.stderr.contains("missing-model"), r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 60, "no hang")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("x.png").path))
    }

    func testAJobThatLosesAProcessKeepsItsStateAndOneProcessFinishesIt() throws {
        let arguments = ["render", "--model", Self.tinyModel, "--W", "1024", "--H", "512", "--prompt", "a lake",
                         "--steps", "12", "--seed", "11", "--scheduler", "dpm++2m", "-o", "k.png", "--state", "k.state"]
        let (process, _) = try start(2, arguments)
        let state = folder.appendingPathComponent("k.state")
        let deadline = Date().addingTimeInterval(120)
        // after a few steps, kill one of the ranks (mpirun's children) with SIGKILL
        var saved = 0
        while process.isRunning && Date() < deadline {
            if let file = try? SafeTensorsFile.open(state), let step = file.metadata["step"].flatMap(Int.init) { saved = step }
            if saved >= 2 { break }
            usleep(20_000)
        }
        XCTAssertTrue(process.isRunning, "the job ended before it could be killed")
        let ranks = children(of: process.processIdentifier)
        XCTAssertEqual(ranks.count, 2, "mpirun's processes: \(ranks)")
        if let victim = ranks.max() { kill(victim, SIGKILL) }
        process.waitUntilExit()
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("k.png").path))
        let kept = try SafeTensorsFile.open(state)
        let step = try XCTUnwrap(kept.metadata["step"].flatMap(Int.init))
        XCTAssertGreaterThanOrEqual(step, 2)
        XCTAssertLessThan(step, 12)
        // one process finishes it; the picture is the one an uninterrupted single process makes
        let resumed = try run(1, ["resume", "k.state"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming from"), resumed.stderr)
        var fresh = arguments
        fresh[fresh.firstIndex(of: "k.png")!] = "fresh.png"
        fresh[fresh.firstIndex(of: "k.state")!] = "fresh.state"
        XCTAssertEqual(try run(1, fresh).status, 0)
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("k.png")),
                       try Data(contentsOf: folder.appendingPathComponent("fresh.png")))
    }

    /// The process ids whose parent is `pid` (from /proc).
    private func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { child in
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            // fields after the command name: state, ppid, …
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }
    }
}
