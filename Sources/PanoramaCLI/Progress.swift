import Foundation

/// Step progress on standard error: a redrawn bar with ETA on a terminal, one line per step
/// otherwise (logs, CI), nothing with `--quiet` or on the other ranks of an MPI job.
struct ProgressReporter {
    private let quiet: Bool
    private let interactive: Bool
    private var start = Date()
    private var lastStep = Date()
    /// In a batch (`--count`): the picture being rendered (0-based) and the number of pictures,
    /// whose remaining steps the ETA includes.
    var picture: (index: Int, count: Int)?

    init(quiet: Bool) {
        self.quiet = quiet || !Job.isPrimary
        interactive = isatty(2) != 0
    }

    /// Starts the clock for steps (so loading time does not inflate the ETA).
    mutating func beginSteps() {
        start = Date()
        lastStep = start
    }

    /// Reports step `index` of `count`; `previewed`: the --preview file was written after it.
    mutating func step(_ index: Int, of count: Int, views: Int, previewed: Bool = false) {
        guard !quiet else { return }
        let now = Date()
        let perStep = now.timeIntervalSince(lastStep)
        lastStep = now
        let elapsed = now.timeIntervalSince(start)
        let laterPictures = picture.map { $0.count - 1 - $0.index } ?? 0
        let eta = elapsed / Double(index) * Double(count - index + laterPictures * count)
        let which = picture.map { "picture \($0.index + 1)/\($0.count) · " } ?? ""
        // an MPI job: the speed of all its processes together
        let job = Job.processes.map { String(format: " · %.2f views/s on %d processes", Double(views) / perStep, $0.size) } ?? ""
        let text = "\(which)step \(index)/\(count) · \(views) views · \(String(format: "%.1f", perStep)) s/step\(job) · ETA \(Self.clock(eta))\(previewed ? " · preview" : "")"
        if interactive {
            let width = 24, filled = width * index / count
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            FileHandle.standardError.write("\r\u{1B}[K\(bar) \(text)".data(using: .utf8)!)
            if index == count { FileHandle.standardError.write("\n".data(using: .utf8)!) }
        } else {
            note(text)
        }
    }

    /// A line of status (loading, decoding, saving).
    func note(_ text: String) {
        guard !quiet else { return }
        FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
    }

    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
            : String(format: "%d:%02d", s / 60, s % 60)
    }
}
