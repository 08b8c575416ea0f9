import Foundation
import Schedulers
import Tensors
import Weights

/// A denoising loop that can be stopped after any step and continued later from its checkpoint,
/// with results identical bit for bit to a run that never stopped.
public protocol ResumableProcess: DenoisingProcess {
    /// The position after the last completed step.
    func checkpoint() -> LoopCheckpoint
    /// Continues from `checkpoint`; throws (changing nothing) when it does not fit this loop.
    mutating func restore(_ checkpoint: LoopCheckpoint) throws
}

extension DenoisingLoop: ResumableProcess {}
extension RegionDenoisingLoop: ResumableProcess {}

/// Why a state cannot be used.
public enum ResumeError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let why): return "the state does not fit this render: \(why)"
        }
    }
}

/// A denoising loop's whole position after a completed step: the canvas, the random generator,
/// the index of the next step and each window's sampler state (or SpotDiffusion's canvas history
/// and offset stream), as named tensors and numbers.
public struct LoopCheckpoint: Sendable {
    /// Index in the scheduler's timesteps of the next step to run.
    public var stepIndex: Int
    public var latents: Tensor
    public var generator: TorchGenerator.Position
    /// Float tensors of the windows' states ("view3", "view3.1") or SpotDiffusion's "history".
    public var tensors: [String: Tensor] = [:]
    /// Numbers: the windows' step indices, SpotDiffusion's offset stream ("shift").
    public var numbers: [String: UInt64] = [:]

    public init(stepIndex: Int, latents: Tensor, generator: TorchGenerator.Position) {
        (self.stepIndex, self.latents, self.generator) = (stepIndex, latents, generator)
    }

    mutating func addView(_ name: String, _ state: (history: Tensor?, index: Int?)) {
        if let h = state.history { tensors[name] = h }
        if let i = state.index { numbers[name] = UInt64(i) }
    }

    var restoredGenerator: TorchGenerator { TorchGenerator(position: generator)! }

    func check(latentsShape: [Int], steps: ClosedRange<Int>) throws {
        guard latents.shape == latentsShape else {
            throw ResumeError.invalid("its canvas latents are \(latents.shape), this render's are \(latentsShape)")
        }
        guard steps.contains(stepIndex) else {
            throw ResumeError.invalid("its step \(stepIndex) is outside \(steps.lowerBound)...\(steps.upperBound)")
        }
        guard TorchGenerator(position: generator) != nil else { throw ResumeError.invalid("its generator position is not one") }
    }

    func checkNames(tensors allowed: Set<String>, numbers allowedNumbers: Set<String>) throws {
        if let extra = tensors.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ResumeError.invalid("it has a tensor \"\(extra)\" this render does not know")
        }
        if let extra = numbers.keys.sorted().first(where: { !allowedNumbers.contains($0) }) {
            throw ResumeError.invalid("it has a number \"\(extra)\" this render does not know")
        }
    }

    /// A window's state, its history checked against `shape` and its index against the schedule.
    func view(_ name: String, shape: [Int], steps: Int) throws -> (Tensor?, Int?) {
        let h = tensors[name]
        if let h, h.shape != shape { throw ResumeError.invalid("\(name)'s history is \(h.shape), not \(shape)") }
        let i = try numbers[name].map { n -> Int in
            guard n <= UInt64(steps) else { throw ResumeError.invalid("\(name)'s step index \(n) is past the \(steps) steps") }
            return Int(n)
        }
        return (h, i)
    }
}

/// A resumable render's state file: a safetensors file with the loop's checkpoint as tensors and,
/// in its `__metadata__`, the format's name and version, the checkpoint's numbers and the record
/// of the command (its arguments, the picture of the batch, the outputs and the identity that a
/// resumed run must match).
public struct RenderState: Sendable {
    public static let format = "panorama-render-state"
    public static let version = 1

    /// What the state was made by and for.
    public struct Record: Codable, Sendable, Equatable {
        /// The subcommand ("render", "compose", "upscale", "inpaint", "outpaint").
        public var command: String
        /// The command's arguments as given (without --resume), to run it again.
        public var arguments: [String]
        /// The working directory the arguments are relative to.
        public var directory: String
        /// The batch's first seed (decimal).
        public var seed: String
        /// The picture of the batch this state is in (0-based), and the batch's size.
        public var picture: Int
        public var pictures: Int
        /// The batch's output files, absolute.
        public var outputs: [String]
        /// Steps done and to do for this picture.
        public var step: Int
        public var steps: Int
        /// Everything that determines this picture (settings, model and LoRA hashes, inputs),
        /// field by field, compared with a resumed run's.
        public var identity: [String: String]
        /// Set when the steps are done and the tiled VAE decode is under way: the directory of
        /// its journal (`TiledPassJournal`), which a resumed run continues from.
        public var decoding: String?

        public init(command: String, arguments: [String], directory: String, seed: String, picture: Int, pictures: Int,
                    outputs: [String], step: Int, steps: Int, identity: [String: String]) {
            (self.command, self.arguments, self.directory, self.seed) = (command, arguments, directory, seed)
            (self.picture, self.pictures, self.outputs, self.step, self.steps, self.identity) = (picture, pictures, outputs, step, steps, identity)
        }
    }

    public var record: Record
    public var checkpoint: LoopCheckpoint

    public init(record: Record, checkpoint: LoopCheckpoint) {
        (self.record, self.checkpoint) = (record, checkpoint)
    }

    /// Writes the state to a temporary file beside `url` and renames it over `url`, so a kill at
    /// any instant leaves either the previous state or this one. (Tests set
    /// PANORAMA_STATE_WRITE_PAUSE to seconds to wait before the rename, to be killed there.)
    public func write(to url: URL) throws {
        var entries: [(name: String, payload: SafeTensorsPayload)] = [
            ("latents", .float(checkpoint.latents, .f32)),
            ("generator", .int64(shape: [627], values: Self.generatorValues(checkpoint.generator))),
        ]
        for (name, tensor) in checkpoint.tensors.sorted(by: { $0.key < $1.key }) { entries.append(("t." + name, .float(tensor, .f32))) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let numbers = checkpoint.numbers.mapValues { String($0) }
        let metadata = ["format": Self.format, "version": String(Self.version), "step": String(checkpoint.stepIndex),
                        "record": String(decoding: try encoder.encode(record), as: UTF8.self),
                        "numbers": String(decoding: try encoder.encode(numbers), as: UTF8.self)]
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        try SafeTensorsWriter.write(entries, metadata: metadata, to: temporary)
        if let pause = ProcessInfo.processInfo.environment["PANORAMA_STATE_WRITE_PAUSE"].flatMap(Double.init), pause > 0 {
            Thread.sleep(forTimeInterval: pause)
        }
        guard rename(temporary.path, url.path) == 0 else {
            let message = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ResumeError.invalid("cannot write the state \(url.path): \(message)")
        }
    }

    static func generatorValues(_ p: TorchGenerator.Position) -> [Int] {
        p.words.map { Int($0) } + [p.index, p.cachedNormalBits == nil ? 0 : 1, Int(bitPattern: UInt(p.cachedNormalBits ?? 0))]
    }

    /// The record alone (the header of the file; the tensors are not read).
    public static func readRecord(_ url: URL) throws -> Record {
        try record(of: try SafeTensorsFile(url: url), url: url)
    }

    private static func record(of file: SafeTensorsFile, url: URL) throws -> Record {
        let path = url.path
        guard file.metadata["format"] == format else {
            throw ResumeError.invalid("\(path) is not a panorama state file")
        }
        guard file.metadata["version"] == String(version) else {
            throw ResumeError.invalid("\(path) is a state of format version \(file.metadata["version"] ?? "?"); this program reads version \(version)")
        }
        guard let json = file.metadata["record"], let record = try? JSONDecoder().decode(Record.self, from: Data(json.utf8)) else {
            throw ResumeError.invalid("\(path) has no readable record")
        }
        guard record.pictures >= 1, record.pictures <= 10_000, record.picture >= 0, record.picture < record.pictures,
              record.outputs.count == record.pictures, record.steps >= 1, record.step >= 0, record.step <= record.steps,
              UInt64(record.seed) != nil else {
            throw ResumeError.invalid("\(path)'s record is inconsistent (picture \(record.picture) of \(record.pictures), step \(record.step) of \(record.steps))")
        }
        return record
    }

    /// Reads a state file as the untrusted file it is: format and version, every tensor's name
    /// and type, the generator's words; the shapes are checked against the render by `restore`.
    public static func read(_ url: URL) throws -> RenderState {
        let file = try SafeTensorsFile(url: url)
        let record = try record(of: file, url: url)
        let path = url.path
        for name in file.names {
            guard name == "latents" || name == "generator" || name.hasPrefix("t.") else {
                throw ResumeError.invalid("\(path) has an unknown tensor \"\(name)\"")
            }
            guard let info = file.info(name), info.dtype == (name == "generator" ? .i64 : .f32) else {
                throw ResumeError.invalid("\(path): tensor \"\(name)\" has the wrong type")
            }
        }
        guard file.contains("latents"), file.contains("generator"), let stepText = file.metadata["step"], let step = Int(stepText) else {
            throw ResumeError.invalid("\(path) lacks the latents, the generator or the step")
        }
        let values = try file.integers("generator")
        guard values.count == 627, values[0..<624].allSatisfy({ $0 >= 0 && $0 <= Int(UInt32.max) }), values[625] == 0 || values[625] == 1,
              let position = Optional(TorchGenerator.Position(words: values[0..<624].map { UInt32($0) }, index: values[624],
                                                               cachedNormalBits: values[625] == 1 ? UInt64(UInt(bitPattern: values[626])) : nil)),
              TorchGenerator(position: position) != nil else {
            throw ResumeError.invalid("\(path): the generator's position is not one")
        }
        var checkpoint = LoopCheckpoint(stepIndex: step, latents: try file.tensor("latents"), generator: position)
        guard checkpoint.latents.shape.count == 4 else { throw ResumeError.invalid("\(path): the latents are not 4-dimensional") }
        for name in file.names where name.hasPrefix("t.") { checkpoint.tensors[String(name.dropFirst(2))] = try file.tensor(name) }
        guard let numbersJSON = file.metadata["numbers"],
              let numbers = try? JSONDecoder().decode([String: String].self, from: Data(numbersJSON.utf8)) else {
            throw ResumeError.invalid("\(path) has no readable numbers")
        }
        for (name, text) in numbers {
            guard let n = UInt64(text) else { throw ResumeError.invalid("\(path): number \"\(name)\" is \"\(text)\"") }
            checkpoint.numbers[name] = n
        }
        return RenderState(record: record, checkpoint: checkpoint)
    }

    /// The fields of `identity` that differ from `other`'s, as "name: the state's X, now Y".
    public static func differences(state: [String: String], now: [String: String]) -> [String] {
        Set(state.keys).union(now.keys).sorted().compactMap { key in
            let (a, b) = (state[key], now[key])
            guard a != b else { return nil }
            return "\(key): the state's \(a.map { "\"\($0)\"" } ?? "none"), now \(b.map { "\"\($0)\"" } ?? "none")"
        }
    }
}
