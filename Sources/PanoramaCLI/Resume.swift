import ArgumentParser
import Foundation
import Imaging
import Models
import Renderer
import Tensors

/// `--state`, `--resume`, `--keep-state`: every generating command saves its state after each
/// step so that a stopped render continues where it stopped.
struct ResumeOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Where the render's state is saved after every step (default: the output's path with .state appended; with --count, the first picture's or --output's); the tiled VAE's journal goes beside it, in FILE.vae.",
        valueName: "file"))
    var state: String?

    @Flag(name: .long, help: "Continue the render stopped with this command's state (refused when the model, LoRAs or settings differ from the state's).")
    var resume = false

    @Flag(name: .long, help: "Keep the state file (and its STATE.vae folder: a finished upscale's encoded input) after the render finishes (they are removed by default).")
    var keepState = false
}

/// `panorama resume STATE`: runs the stopped command again from its state.
struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a stopped render from its state file.",
        discussion: """
            Every generating command (render, compose, upscale, inpaint, outpaint) saves its state after \
            each step: the canvas, the samplers' and the random generator's states and its settings. \
            A render stopped by Ctrl-C, a kill or a reboot continues from its last completed step, \
            with the settings in the state, and writes the same picture as a render that never stopped.

            The tiled VAE decode after the last step (and upscale's encode before the first) keeps a \
            journal in the folder STATE.vae beside the state: its maps and a record after its tiles. \
            A decode stopped there continues from its last recorded tile, not from the start; an \
            encode stopped there continues when the same command runs again.

            Example:
              panorama resume panorama-2048x512-1234.png.state
            """)

    @Argument(help: ArgumentHelp("The state file.", valueName: "state"))
    var statePath: String

    func run() throws {
        let url = URL(fileURLWithPath: statePath).standardizedFileURL
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ResumeRefusal("no state file at \(url.path)")
        }
        let record = try RenderState.readRecord(url)
        guard FileManager.default.changeCurrentDirectoryPath(record.directory) else {
            throw ResumeRefusal("the state's working directory \(record.directory) no longer exists")
        }
        var command = try Panorama.parseAsRoot(record.arguments + ["--resume", "--state", url.path])
        guard !(command is Resume) else { throw ResumeRefusal("\(url.path) names no render command") }
        try command.run()
    }
}

/// A refusal to resume, printed without the usage text.
struct ResumeRefusal: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The resumable side of one command run: where its state goes, the state it continues from,
/// and the saving after every step.
final class ResumeSession: @unchecked Sendable {
    nonisolated(unsafe) static var current: ResumeSession?

    let stateURL: URL
    /// The state this run continues from (nil: from the start).
    let resumed: RenderState?
    let keep: Bool
    /// The record written into every state (its step, picture and identity filled in per step).
    var record: RenderState.Record
    /// The picture of the batch being rendered.
    var picture = 0
    /// State writes so far, their time and the last one's size (reported at the end).
    var writes = 0, writeSeconds = 0.0, bytes = 0

    /// The folder of the tiled VAE passes' journals: STATE.vae.
    var journalFolder: URL { URL(fileURLWithPath: stateURL.path + ".vae") }

    init(stateURL: URL, resumed: RenderState?, keep: Bool, record: RenderState.Record) {
        (self.stateURL, self.resumed, self.keep, self.record) = (stateURL, resumed, keep, record)
    }

    /// The arguments to store: the command line as given, without --resume and --state.
    static func storedArguments() -> [String] {
        var out: [String] = [], args = Array(CommandLine.arguments.dropFirst())
        while !args.isEmpty {
            let a = args.removeFirst()
            if a == "--resume" { continue }
            if a == "--state" { if !args.isEmpty { args.removeFirst() }; continue }
            if a.hasPrefix("--state=") { continue }
            out.append(a)
        }
        return out
    }

    /// The state file a command that already has its state's record continues.
    static func commandName(_ arguments: [String]) -> String {
        let names = ["render", "compose", "upscale", "inpaint", "outpaint"]
        return arguments.first.flatMap { names.contains($0) ? $0 : nil } ?? "render"
    }

    /// Shell-quoted `path` for the printed command.
    static func quoted(_ path: String) -> String {
        path.allSatisfy({ $0.isLetter || $0.isNumber || "/._-+=:,@".contains($0) }) ? path
            : "'" + path.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

extension GenerationOptions {
    /// The state a --resume run continues, found by --state, by --output (its path with .state),
    /// or among the current folder's states by this command's arguments; nil without --resume.
    func resumedState() throws -> (url: URL, state: RenderState)? {
        guard resumeOptions.resume else { return nil }
        if let cached = ResumeSession.loaded { return cached }
        let url: URL
        if let path = resumeOptions.state {
            url = URL(fileURLWithPath: path).standardizedFileURL
        } else if let output {
            url = URL(fileURLWithPath: output + ".state").standardizedFileURL
        } else {
            let folder = FileManager.default.currentDirectoryPath
            let arguments = ResumeSession.storedArguments()
            let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
                .filter { $0.hasSuffix(".state") }.sorted()
                .filter { (try? RenderState.readRecord(URL(fileURLWithPath: folder + "/" + $0)))?.arguments == arguments }
            guard let first = candidates.first else {
                throw ResumeRefusal("--resume: no state of this command in \(folder); pass --state FILE")
            }
            guard candidates.count == 1 else {
                throw ResumeRefusal("--resume: several states of this command in \(folder) (\(candidates.joined(separator: ", "))); pass --state FILE")
            }
            url = URL(fileURLWithPath: folder + "/" + first)
        }
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ResumeRefusal("--resume: no state file at \(url.path)")
        }
        let state: RenderState
        do { state = try RenderState.read(url) } catch { throw ResumeRefusal("--resume: \(error)") }
        ResumeSession.loaded = (url, state)
        return (url, state)
    }

    /// The seed a --resume run takes when none is given: the state's.
    func resumedSeed() throws -> UInt64? {
        try resumedState().flatMap { UInt64($0.state.record.seed) }
    }

    /// The batch's outputs as the state records them (a --resume run writes the original files).
    func resumedOutputs(seed: UInt64) throws -> [(seed: UInt64, url: URL)]? {
        guard let (url, state) = try resumedState() else { return nil }
        let record = state.record
        guard record.pictures == count else {
            throw ResumeRefusal("--resume: \(url.path) is a batch of \(record.pictures), not --count \(count)")
        }
        guard UInt64(record.seed) == seed else {
            throw ResumeRefusal("--resume: \(url.path) was made with --seed \(record.seed), not \(seed)")
        }
        return try record.outputs.enumerated().map { k, path in
            (seed + UInt64(k), try checkedWritable(URL(fileURLWithPath: path), replace: true))
        }
    }

    /// Starts the batch's session: the state's location and the state continued from.
    func beginSession(seed: UInt64, outputs: [(seed: UInt64, url: URL)]) throws {
        let resumed = try resumedState()
        let stateURL = resumed?.url ?? URL(fileURLWithPath: resumeOptions.state
            ?? ((output.map { URL(fileURLWithPath: $0).path } ?? outputs[0].url.path) + ".state")).standardizedFileURL
        _ = try checkedWritable(stateURL, replace: true)
        let arguments = resumed?.state.record.arguments ?? ResumeSession.storedArguments()
        let record = RenderState.Record(command: ResumeSession.commandName(arguments), arguments: arguments,
                                        directory: resumed?.state.record.directory ?? FileManager.default.currentDirectoryPath,
                                        seed: String(seed), picture: 0, pictures: outputs.count,
                                        outputs: outputs.map { $0.url.standardizedFileURL.path }, step: 0, steps: 1, identity: [:])
        ResumeSession.current = ResumeSession(stateURL: stateURL, resumed: resumed?.state, keep: resumeOptions.keepState, record: record)
        installStopHandlers(stateURL: stateURL)
        if resumed != nil { stateSaved() }
    }

    /// Everything that determines one picture, field by field: the PNG's parameters (settings,
    /// model hash, LoRA hashes, embeddings), the settings the parameters leave out, the command's
    /// texts (regions) and a hash of its input pictures.
    func identity(_ settings: PanoramaSettings, parameters: String, extraText: [(key: String, value: String)],
                  inputs: [Tensor]) -> [String: String] {
        var fields: [String: String] = [:]
        let infotext = Infotext(parsing: parameters)
        fields["prompt"] = infotext.prompt
        fields["negative prompt"] = infotext.negativePrompt
        for field in infotext.fields { fields[field.key] = field.value }
        for child in Mirror(reflecting: settings).children {
            guard let label = child.label else { continue }
            switch child.value {
            case let method as DecodeMethod:
                if case .whole = method { fields["setting decode"] = "whole" } else { fields["setting decode"] = "tiled" }
            default: fields["setting \(label)"] = String(describing: child.value)
            }
        }
        for (key, value) in extraText { fields["text \(key)"] = value }
        for (k, input) in inputs.enumerated() { fields["input \(k + 1)"] = fingerprint(input) }
        return fields
    }

    /// FNV-1a over a tensor's shape and float bits.
    private func fingerprint(_ t: Tensor) -> String {
        var h = FNV1a()
        for d in t.shape { h.add(UInt64(d)) }
        t.withUnsafeBufferPointer { p in for x in p { h.add(UInt64(x.bitPattern)) } }
        return h.hex + " \(t.shape)"
    }

    /// Before the loop runs: restores it from the state when the state is at this picture (after
    /// checking that nothing differs), else leaves it at its start.
    func restoreIfResumed<L: ResumableProcess>(_ loop: inout L, identity: [String: String], progress: ProgressReporter) throws {
        guard let session = ResumeSession.current else { return }
        session.record.picture = session.picture
        session.record.identity = identity
        guard let state = session.resumed, state.record.picture == session.picture else { return }
        (session.record.step, session.record.steps) = (state.record.step, state.record.steps)
        let differences = RenderState.differences(state: state.record.identity, now: identity)
        guard differences.isEmpty else {
            throw ResumeRefusal("--resume: \(session.stateURL.path) was made with other settings; it differs in\n  "
                                  + differences.joined(separator: "\n  "))
        }
        do { try loop.restore(state.checkpoint) } catch { throw ResumeRefusal("--resume: \(session.stateURL.path): \(error)") }
        progress.note("resuming from \(session.stateURL.path): step \(state.record.step) of \(state.record.steps)"
                      + (state.record.pictures > 1 ? ", picture \(state.record.picture + 1) of \(state.record.pictures)" : ""))
    }

    /// After a completed step: the state, written atomically.
    func saveState<L: ResumableProcess>(_ loop: L, report: StepReport) throws {
        guard let session = ResumeSession.current, Job.isPrimary else { return }
        session.record.step = report.index + 1
        session.record.steps = report.count
        let start = Date()
        try RenderState(record: session.record, checkpoint: loop.checkpoint()).write(to: session.stateURL)
        session.writeSeconds += Date().timeIntervalSince(start)
        session.writes += 1
        stateSaved()
    }

    /// After the whole batch: the state is removed unless --keep-state.
    func endSession(progress: ProgressReporter) {
        guard let session = ResumeSession.current else { return }
        guard Job.isPrimary else { ResumeSession.current = nil; return }
        if session.writes > 0 {
            let size = ((try? FileManager.default.attributesOfItem(atPath: session.stateURL.path))?[.size] as? Int) ?? 0
            progress.note(String(format: "state: %@ saved after each of %d steps in %.1f ms on average", formatBytes(size),
                                 session.writes, 1000 * session.writeSeconds / Double(session.writes)))
        }
        if !session.keep {
            try? FileManager.default.removeItem(at: session.stateURL)
            try? FileManager.default.removeItem(at: session.journalFolder)
        }
        // temporary files of state writes that a kill interrupted
        let folder = session.stateURL.deletingLastPathComponent(), name = session.stateURL.lastPathComponent
        for file in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        where (file.hasPrefix(".\(name).") || file.hasPrefix("..\(name).")) && file.hasSuffix(".tmp") {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(file))
        }
        ResumeSession.current = nil
    }
}

extension ResumeSession {
    nonisolated(unsafe) static var loaded: (url: URL, state: RenderState)?
}

extension GenerationOptions {
    /// The journal that makes this picture's tiled VAE pass `kind` resumable, in STATE.vae/KIND
    /// beside the state; nil without a session, or (with a note) when its files would not fit
    /// that disk. PANORAMA_VAE_CHECKPOINT_SECONDS sets how often maps kept in memory are copied
    /// into it (default: every 60 s, and at most 5 % of the time; maps in files are recorded
    /// after every tile regardless).
    func vaeJournal(_ kind: TiledPassJournal.Kind, pipeline: PanoramaPipeline, settings: PanoramaSettings,
                    progress: ProgressReporter) -> TiledPassJournal? {
        // An MPI job's processes divide the pass's tiles, and a journal follows one process's
        // tiles: its VAE passes start over after a stop (its steps resume as anywhere).
        guard let session = ResumeSession.current, Job.processes == nil else { return nil }
        let need = pipeline.journalBytes(settings, encoding: kind == .encode)
        guard need > 0 else { return nil }
        let folder = session.stateURL.deletingLastPathComponent().path
        if let free = freeDiskSpace(folder), need > free - max(1 << 30, free / 20) {
            progress.note("the \(kind.rawValue)'s journal would need \(formatBytes(need)) in \(folder), which has \(formatBytes(free)) free: "
                          + "the \(kind.rawValue) runs without one (a stop in it starts it over)")
            return nil
        }
        let interval = ProcessInfo.processInfo.environment["PANORAMA_VAE_CHECKPOINT_SECONDS"].flatMap(Double.init)
        let journal = TiledPassJournal(directory: session.journalFolder.appendingPathComponent(kind.rawValue),
                                       checkpointInterval: max(0, interval ?? 60), note: { progress.note($0) })
        // an interval asked for is kept, however much the copies cost (tests: 0, after every tile)
        if interval != nil { journal.copyTimeShare = 1 }
        return journal
    }

    /// Runs a journaled VAE pass: the state records a decode under way (with its journal), a stop
    /// says how to continue, and afterwards the journal's cost is reported.
    func withJournal<T>(_ journal: TiledPassJournal?, _ kind: TiledPassJournal.Kind, loop: (any ResumableProcess)?,
                        progress: ProgressReporter, _ body: () throws -> T) throws -> T {
        guard let journal, let session = ResumeSession.current else { return try body() }
        if kind == .decode, let loop {
            session.record.decoding = journal.directory.path
            try RenderState(record: session.record, checkpoint: loop.checkpoint()).write(to: session.stateURL)
            stateSaved()
        }
        vaePassStarted(kind, journal: journal.directory, stateURL: session.stateURL)
        let result = try body()
        vaePassEnded(kind)
        session.record.decoding = nil
        if journal.records > 0 {
            progress.note(String(format: "%@ journal: %d records in %.2f s, %@ of in-memory maps copied", kind.rawValue,
                                 journal.records, journal.recordSeconds, formatBytes(journal.copiedBytes)))
        }
        return result
    }
}

// MARK: - SIGINT / SIGTERM

/// What the handler prints: prepared beforehand, as a signal handler may only write(2) and _exit.
nonisolated(unsafe) private var stopMessage: UnsafeMutablePointer<CChar>?
nonisolated(unsafe) private var stopMessageLength = 0
nonisolated(unsafe) private var savedMessage: String = ""
/// The message once a state exists (restored after a VAE pass's own).
nonisolated(unsafe) private var continueMessage: String = ""

private func setStopMessage(_ text: String) {
    let bytes = Array(text.utf8CString)
    let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
    buffer.initialize(from: bytes, count: bytes.count)
    let old = stopMessage
    stopMessageLength = bytes.count - 1
    stopMessage = buffer
    old?.deallocate()
}

/// On SIGINT or SIGTERM the render stops at once: the state on disk is the last completed step's
/// (the step under way is abandoned), the handler prints how to continue and exits with 128 + the
/// signal (130 for Ctrl-C, 143 for SIGTERM).
private func installStopHandlers(stateURL: URL) {
    // in an MPI job rank 0 says it; mpirun passes the signal to every rank
    guard Job.isPrimary else {
        signal(SIGINT, { _exit(128 + $0) })
        signal(SIGTERM, { _exit(128 + $0) })
        return
    }
    let path = ResumeSession.quoted(stateURL.path)
    savedMessage = "\nstopped; the last completed step is saved in \(stateURL.path)\nto continue: panorama resume \(path)\n"
    continueMessage = savedMessage
    setStopMessage("\nstopped before the first step completed; nothing was saved\n")
    let handler: @convention(c) (Int32) -> Void = { signal in
        if let stopMessage { _ = write(2, stopMessage, stopMessageLength) }
        _exit(128 + signal)
    }
    signal(SIGINT, handler)
    signal(SIGTERM, handler)
}

/// During a journaled VAE pass a stop keeps its progress: a decode continues with `panorama
/// resume`, an encode before the first step by running the command again.
private func vaePassStarted(_ kind: TiledPassJournal.Kind, journal: URL, stateURL: URL) {
    if kind == .decode {
        setStopMessage("\nstopped in the decode; its progress is saved in \(journal.path)\n"
                       + "to continue: panorama resume \(ResumeSession.quoted(stateURL.path))\n")
    } else if !savedMessage.isEmpty {
        setStopMessage("\nstopped in the encode, before the first step; its progress is saved in \(journal.path)\n"
                       + "to continue: run the same command again\n")
    }
}

private func vaePassEnded(_ kind: TiledPassJournal.Kind) {
    setStopMessage(savedMessage.isEmpty ? continueMessage : kind == .encode
        ? "\nstopped before the first step completed; the encoded input is kept: running the same command again does not encode it again\n"
        : "\nstopped before the first step completed; nothing was saved\n")
}

/// Called after every state write: from now on a stop says how to continue.
private func stateSaved() {
    if !savedMessage.isEmpty {
        setStopMessage(savedMessage)
        savedMessage = ""
    }
}
