import Foundation
import Imaging
import Weights
import XCTest

/// Resumable renders: killed (SIGKILL) at seeded random instants — while loading, in the UNet,
/// in the fusion, during the state's write (held open by PANORAMA_STATE_WRITE_PAUSE), in the
/// decode — and continued with `panorama resume`, every command ends with a PNG identical byte
/// for byte to a render that never stopped.
extension CLITests {
    /// The `panorama` process for `arguments`, started (not waited for).
    private func start(_ arguments: [String], pause: Double? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("panorama")
        process.arguments = arguments
        process.currentDirectoryURL = folder
        var environment = ProcessInfo.processInfo.environment
        if let pause { environment["PANORAMA_STATE_WRITE_PAUSE"] = String(pause) }
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs `arguments`, kills it with SIGKILL at `kills` random instants (seeded) of its run
    /// time and continues it each time — with `panorama resume STATE` once a state exists, else
    /// the command again — then lets it finish. Returns the number of kills that found it running.
    @discardableResult
    private func renderKilled(_ arguments: [String], state: String, duration: Double, kills: Int, seed: UInt64,
                              file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        var rng = SplitMix(seed)
        var landed = 0, phases: [String] = []
        let stateURL = folder.appendingPathComponent(state)
        var finished = false
        for attempt in 0..<kills {
            let resuming = FileManager.default.fileExists(atPath: stateURL.path)
            let command = resuming ? ["resume", state] : arguments
            // the second attempt holds each state write open (0.5 s) and is killed as soon as one is
            // under way; every third holds them a little, so random kills land in them too
            let inWrite = attempt == 1
            let process = try start(command, pause: inWrite ? 0.5 : attempt % 3 == 2 ? 0.15 : nil)
            let delay = inWrite ? 4 * duration : duration * (0.1 + 0.5 * rng.unit())
            let deadline = Date().addingTimeInterval(delay)
            while process.isRunning && Date() < deadline && !(inWrite && writing(stateURL)) { usleep(5_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                landed += 1
            }
            process.waitUntilExit()
            if process.terminationReason == .uncaughtSignal { phases.append(phase(stateURL)) }
            if process.terminationReason == .exit {
                XCTAssertEqual(process.terminationStatus, 0, "\(command) failed", file: file, line: line)
                finished = true
                break
            }
        }
        if !finished {
            let command = FileManager.default.fileExists(atPath: stateURL.path) ? ["resume", state] : arguments
            let process = try start(command)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, "the last, unkilled run of \(command) failed", file: file, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateURL.path), "the state is removed after the finish", file: file, line: line)
        print("\(arguments[0].hasPrefix("--") ? "render" : arguments[0]) \(arguments.contains("--spot") ? "--spot " : "")\(arguments.contains("--count") ? "--count " : ""): \(landed) of \(kills) kills landed (reference run \(String(format: "%.1f", duration)) s): \(phases.joined(separator: ", "))")
        return landed
    }

    /// Where a killed run was: the steps its state had saved, and whether a state write was
    /// under way (its temporary file left behind, removed here).
    private func phase(_ stateURL: URL) -> String {
        let temporaries = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .filter { $0.contains(".\(stateURL.lastPathComponent).") && $0.hasSuffix(".tmp") }
        for t in temporaries { try? FileManager.default.removeItem(at: folder.appendingPathComponent(t)) }
        guard let file = try? SafeTensorsFile(url: stateURL), let json = file.metadata["record"],
              let record = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let step = record["step"] as? Int, let steps = record["steps"] as? Int, let picture = record["picture"] as? Int
        else { return "before the first step" + (temporaries.isEmpty ? "" : " (in the state write)") }
        let at = step == steps ? "after the last step (decode)" : "in step \(step + 1)/\(steps)"
        return "picture \(picture + 1) " + at + (temporaries.isEmpty ? "" : " (in the state write)")
    }

    /// Whether a state write is under way (its temporary file exists).
    private func writing(_ stateURL: URL) -> Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .contains { $0.hasPrefix(".\(stateURL.lastPathComponent).") && $0.hasSuffix(".tmp") }
    }

    /// The reference render, its run time.
    private func reference(_ arguments: [String]) throws -> Double {
        let start = Date()
        let r = try run(arguments)
        XCTAssertEqual(r.status, 0, r.stderr)
        return Date().timeIntervalSince(start)
    }

    private func assertSameFile(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try Data(contentsOf: folder.appendingPathComponent(a)), y = try Data(contentsOf: folder.appendingPathComponent(b))
        XCTAssertTrue(x == y, "\(a) and \(b) differ", file: file, line: line)
    }

    private var tiny: [String] { ["--model", Self.tinyModel, "--prompt", "a lake", "--seed", "11", "--quiet"] }

    func testResumeAfterKillsIsByteIdenticalRenderEulerA() throws {
        let args = tiny + ["--W", "768", "--H", "512", "--steps", "8", "--scheduler", "euler-a", "--stride", "16"]
        let t = try reference(args + ["-o", "ref.png"])
        let landed = try renderKilled(args + ["-o", "out.png"], state: "out.png.state", duration: t, kills: 6, seed: 1)
        try assertSameFile("ref.png", "out.png")
        XCTAssertGreaterThanOrEqual(landed, 2, "kills should land while it runs")
    }

    func testResumeAfterKillsIsByteIdenticalSpotDiffusion() throws {
        let args = tiny + ["--W", "1024", "--H", "512", "--steps", "8", "--scheduler", "dpm++2m", "--spot"]
        let t = try reference(args + ["-o", "ref.png"])
        try renderKilled(args + ["-o", "out.png"], state: "out.png.state", duration: t, kills: 6, seed: 2)
        try assertSameFile("ref.png", "out.png")
    }

    func testResumeAfterKillsIsByteIdenticalCompose() throws {
        let args = ["compose"] + tiny + ["--W", "1024", "--H", "512", "--steps", "6", "--stride", "32", "--scheduler", "dpm++2m",
                                         "--region", "0,0,0.4,1:a calm sea", "--bootstrap-steps", "2"]
        let t = try reference(args + ["-o", "ref.png"])
        try renderKilled(args + ["-o", "out.png"], state: "out.png.state", duration: t, kills: 5, seed: 3)
        try assertSameFile("ref.png", "out.png")
    }

    func testResumeAfterKillsIsByteIdenticalUpscale() throws {
        var pixels: [UInt8] = []
        for y in 0..<256 { for x in 0..<320 { pixels += [UInt8(x % 256), UInt8(y % 256), UInt8((x + y) % 256)] } }
        try PNG.write(RGBImage(width: 320, height: 256, pixels: pixels), to: folder.appendingPathComponent("in.png"))
        let args = ["upscale"] + tiny + ["--input", "in.png", "--scale", "2", "--steps", "10", "--strength", "0.6",
                                         "--stride", "32", "--scheduler", "lcm", "--guidance", "1"]
        let t = try reference(args + ["-o", "ref.png"])
        try renderKilled(args + ["-o", "out.png"], state: "out.png.state", duration: t, kills: 5, seed: 4)
        try assertSameFile("ref.png", "out.png")
    }

    func testResumeAfterKillsIsByteIdenticalOutpaint() throws {
        var pixels: [UInt8] = []
        for y in 0..<256 { for x in 0..<300 { pixels += [UInt8(x % 256), UInt8(y % 256), UInt8((2 * x + y) % 256)] } }
        try PNG.write(RGBImage(width: 300, height: 256, pixels: pixels), to: folder.appendingPathComponent("in.png"))
        let args = ["outpaint"] + tiny + ["--input", "in.png", "--W", "1024", "--H", "512", "--steps", "6", "--stride", "32",
                                          "--scheduler", "euler-a"]
        let t = try reference(args + ["-o", "ref.png"])
        try renderKilled(args + ["-o", "out.png"], state: "out.png.state", duration: t, kills: 4, seed: 6)
        try assertSameFile("ref.png", "out.png")
    }

    func testResumeAfterKillsIsByteIdenticalBatch() throws {
        let args = tiny + ["--W", "512", "--H", "512", "--steps", "4", "--scheduler", "euler-a", "--count", "3"]
        let t = try reference(args + ["-o", "ref.png"])
        try renderKilled(args + ["-o", "out.png"], state: "out.png.state", duration: t, kills: 7, seed: 5)
        for seed in 11...13 { try assertSameFile("ref-\(seed).png", "out-\(seed).png") }
    }

    /// The tiled VAE passes resume from their journals (STATE.vae): an upscale killed in its
    /// encode continues it when run again, stopped by Ctrl-C in its decode continues the decode
    /// from the journal's last tile with `panorama resume` (not from its first layer), and the PNG
    /// is identical to an uninterrupted run's.
    func testResumeInsideTheVAEPassesIsByteIdentical() throws {
        var pixels: [UInt8] = []
        for y in 0..<256 { for x in 0..<320 { pixels += [UInt8(x % 256), UInt8(y % 256), UInt8((x + y) % 256)] } }
        try PNG.write(RGBImage(width: 320, height: 256, pixels: pixels), to: folder.appendingPathComponent("in.png"))
        let args = ["upscale", "--model", Self.tinyModel, "--prompt", "a lake", "--seed", "11", "--input", "in.png", "--scale", "8",
                    "--steps", "2", "--strength", "0.6", "--stride", "32", "--scheduler", "lcm", "--guidance", "1"]
        _ = try reference(args + ["-o", "ref.png", "--quiet"])
        var rng = SplitMix(7)
        let journal = folder.appendingPathComponent("out.png.state.vae")
        /// Runs `command` (records after every tile), stops it with `signal` a seeded instant after
        /// `record` appears, and returns its exit status and stderr.
        func stopped(_ command: [String], at record: String, _ signal: Int32) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("panorama")
            process.arguments = command
            process.currentDirectoryURL = folder
            process.environment = ProcessInfo.processInfo.environment.merging(["PANORAMA_VAE_CHECKPOINT_SECONDS": "0"]) { $1 }
            let log = folder.appendingPathComponent("stderr-\(UUID().uuidString)")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let path = journal.appendingPathComponent(record).path
            let deadline = Date().addingTimeInterval(300)
            while process.isRunning && !FileManager.default.fileExists(atPath: path) && Date() < deadline { usleep(2_000) }
            usleep(useconds_t((0.3 + 1.2 * rng.unit()) * 1e6))
            XCTAssertTrue(process.isRunning, "\(command) still runs when stopped")
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: try Data(contentsOf: log), as: UTF8.self))
        }
        // killed in the encode (no state yet)
        _ = try stopped(args + ["-o", "out.png"], at: "encode/record.json", SIGKILL)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out.png.state").path))
        // the command again: the encode continues; Ctrl-C in the decode
        let (status, stderr) = try stopped(args + ["-o", "out.png"], at: "decode/record.json", SIGINT)
        XCTAssertTrue(stderr.contains("encoding: resumed at layer"), stderr)
        XCTAssertEqual(status, 130, stderr)
        XCTAssertTrue(stderr.contains("stopped in the decode; its progress is saved in") && stderr.contains("to continue: panorama resume"),
                      stderr)
        let resumed = try run(["resume", "out.png.state"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        try assertSameFile("ref.png", "out.png")
        // it continued the decode, not from its first layer
        let note = resumed.stderr.split(separator: "\n").first { $0.contains("decoding: resumed at layer") }
        XCTAssertNotNil(note, resumed.stderr)
        let layer = note.flatMap { $0.split(separator: " ").drop { $0 != "layer" }.dropFirst().first }.flatMap { Int($0) }
        XCTAssertGreaterThan(layer ?? 0, 1, resumed.stderr)
        print("upscale stopped in the VAE passes: \(stderr.split(separator: "\n").filter { $0.contains("resumed at") }), then \(note ?? "?")")
        XCTAssertFalse(FileManager.default.fileExists(atPath: journal.path), "the journals go with the state")
    }

    /// A stopped render's state is refused by a command whose settings or model differ, saying
    /// what differs; `--resume` with the same command continues it.
    func testResumeRefusesOtherSettingsAndContinuesTheSame() throws {
        let args = tiny + ["--W", "768", "--H", "512", "--steps", "3", "-o", "out.png"]
        let full = try run(args + ["--keep-state"])
        XCTAssertEqual(full.status, 0, full.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out.png.state").path), "--keep-state")
        try FileManager.default.moveItem(at: folder.appendingPathComponent("out.png"), to: folder.appendingPathComponent("first.png"))
        let steps = try run(tiny + ["--W", "768", "--H", "512", "--steps", "4", "-o", "out.png", "--resume"])
        XCTAssertNotEqual(steps.status, 0)
        XCTAssertTrue(steps.stderr.contains("was made with other settings") && steps.stderr.contains("Steps: the state's \"3\", now \"4\""),
                      steps.stderr)
        let otherModel = try run(args + ["--resume", "--model", Self.fixtures.appendingPathComponent("models/tiny-sd1").path])
        XCTAssertNotEqual(otherModel.status, 0)
        XCTAssertTrue(otherModel.stderr.contains("Model hash: the state's"), otherModel.stderr)
        let prompt = try run(args.map { $0 == "a lake" ? "a sea" : $0 } + ["--resume"])
        XCTAssertTrue(prompt.stderr.contains("prompt: the state's \"a lake\", now \"a sea\""), prompt.stderr)
        // the same command continues (here: decodes the finished state) and removes the state
        let same = try run(args + ["--resume"])
        XCTAssertEqual(same.status, 0, same.stderr)
        try assertSameFile("first.png", "out.png")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out.png.state").path))

        try Data("garbage".utf8).write(to: folder.appendingPathComponent("bad.state"))
        let bad = try run(["resume", "bad.state"])
        XCTAssertNotEqual(bad.status, 0)
        let none = try run(["resume", "absent.state"])
        XCTAssertTrue(none.stderr.contains("no state file at"), none.stderr)
    }

    /// Ctrl-C (SIGINT) stops at once with status 130, keeps the last completed step's state and
    /// prints the command that continues it.
    func testInterruptPrintsHowToContinue() throws {
        let args = tiny + ["--W", "1024", "--H", "512", "--steps", "16", "-o", "out.png"]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("panorama")
        process.arguments = args
        process.currentDirectoryURL = folder
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let state = folder.appendingPathComponent("out.png.state")
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: state.path) && process.isRunning && Date() < deadline { usleep(10_000) }
        kill(process.processIdentifier, SIGINT)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 130, "status \(process.terminationStatus), stderr: \(stderr)")
        XCTAssertTrue(stderr.contains("to continue: panorama resume ") && stderr.contains("out.png.state"), "stderr: \(stderr)")
        let resumed = try run(["resume", "out.png.state"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let r = try run(args.map { $0 == "out.png" ? "ref.png" : $0 })
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertSameFile("ref.png", "out.png")
    }
}

/// A seeded source of kill instants.
private struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func unit() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
    }
}
