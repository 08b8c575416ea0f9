import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock seconds since an arbitrary origin (monotonic).
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Runs `body` `warmups` times untimed, then `runs` times timed; returns the timed seconds.
func time(warmups: Int, runs: Int, _ body: () throws -> Void) rethrows -> [Double] {
    for _ in 0..<warmups { try body() }
    var seconds: [Double] = []
    for _ in 0..<runs {
        let t0 = now()
        try body()
        seconds.append(now() - t0)
    }
    return seconds
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? .nan : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// A field of /proc/self/status in bytes (VmHWM = peak resident set size, VmRSS = current).
func procStatusBytes(_ field: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
    }
    return 0
}

/// How busy the machine was besides this process during a measurement: CPU time of everything
/// else (from /proc/stat minus this process's own rusage), and hypervisor steal, both in cores.
struct LoadProbe {
    private let wall: Double, busy: Double, steal: Double, own: Double

    init() {
        wall = now()
        (busy, steal) = Self.systemCPU()
        own = Self.ownCPU()
    }

    /// (other processes' cores, steal cores) averaged since `init`.
    func finish() -> (other: Double, steal: Double) {
        let dt = max(1e-9, now() - wall)
        let (b, s) = Self.systemCPU()
        let other = max(0, (b - busy) - (Self.ownCPU() - own)) / dt
        return (other, (s - steal) / dt)
    }

    /// Seconds of busy (user+nice+system+irq+softirq) and steal time of all CPUs.
    private static func systemCPU() -> (Double, Double) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return (0, 0) }
        let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard v.count >= 8 else { return (0, 0) }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ((v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz)
    }

    private static func ownCPU() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) * 1e-6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) * 1e-6
    }
}

/// One measured row: what the table and `--json` report.
struct RowResult {
    var row: String
    var what: String
    var seconds: [Double]
    var warmups: Int
    /// Counted floating-point operations of one timed run (nil where not meaningful).
    var gflop: Double?
    var flopBreakdown: [String: Double] = [:]
    /// The sgemm reference rate the fraction is taken of (nil if unknown).
    var sgemmGflops: Double?
    var peakRSS: Int = procStatusBytes("VmHWM")
    var otherLoadCores: Double = 0
    var stealCores: Double = 0
    /// Row-specific figures (load time, per-shape sgemm rates, …).
    var extra: [String: Any] = [:]
    var note: String = ""

    var minSeconds: Double { seconds.min() ?? .nan }
    var medianSeconds: Double { median(seconds) }
    var gflops: Double? { gflop.map { $0 / minSeconds } }
    var fractionOfSgemm: Double? {
        guard let g = gflops, let s = sgemmGflops, s > 0 else { return nil }
        return g / s
    }

    var json: [String: Any] {
        var d: [String: Any] = [
            "row": row, "what": what, "seconds": seconds, "warmups": warmups,
            "min_seconds": minSeconds, "median_seconds": medianSeconds,
            "peak_rss_bytes": peakRSS, "other_load_cores": otherLoadCores, "steal_cores": stealCores,
        ]
        if let gflop { d["gflop"] = gflop }
        if !flopBreakdown.isEmpty { d["gflop_breakdown"] = flopBreakdown }
        if let g = gflops { d["gflops"] = g }
        if let s = sgemmGflops { d["sgemm_gflops"] = s }
        if let f = fractionOfSgemm { d["fraction_of_sgemm"] = f }
        if !extra.isEmpty { d["extra"] = extra }
        if !note.isEmpty { d["note"] = note }
        return d
    }

    init(row: String, what: String, seconds: [Double], warmups: Int, gflop: Double?) {
        self.row = row
        self.what = what
        self.seconds = seconds
        self.warmups = warmups
        self.gflop = gflop
    }

    /// Rebuilds a result from a child process's `--json` output.
    init?(json d: [String: Any]) {
        guard let row = d["row"] as? String, let seconds = d["seconds"] as? [Double] else { return nil }
        self.row = row
        what = d["what"] as? String ?? ""
        self.seconds = seconds
        warmups = d["warmups"] as? Int ?? 0
        gflop = d["gflop"] as? Double
        flopBreakdown = d["gflop_breakdown"] as? [String: Double] ?? [:]
        sgemmGflops = d["sgemm_gflops"] as? Double
        peakRSS = d["peak_rss_bytes"] as? Int ?? 0
        otherLoadCores = d["other_load_cores"] as? Double ?? 0
        stealCores = d["steal_cores"] as? Double ?? 0
        extra = d["extra"] as? [String: Any] ?? [:]
        note = d["note"] as? String ?? ""
    }
}

func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }

/// The human-readable table of `results`.
func table(_ results: [RowResult]) -> String {
    func f(_ x: Double?, _ format: String) -> String { x.map { String(format: format, $0) } ?? "–" }
    var lines = [
        "| row | runs | min s | median s | GFLOP | GFLOP/s | % of sgemm | peak RSS | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results {
        let runs = "\(r.seconds.count)" + (r.warmups > 0 ? " (+\(r.warmups) warm-up)" : "")
        lines.append("| \(r.row) | \(runs) | \(f(r.minSeconds, "%.3f")) | \(f(r.medianSeconds, "%.3f")) | "
            + "\(f(r.gflop, "%.1f")) | \(f(r.gflops, "%.1f")) | \(f(r.fractionOfSgemm.map { $0 * 100 }, "%.0f %%")) | "
            + "\(gib(r.peakRSS)) | \(String(format: "%.2f", r.otherLoadCores)) |")
    }
    for r in results where !r.note.isEmpty || !r.extra.isEmpty {
        var parts: [String] = []
        if !r.note.isEmpty { parts.append(r.note) }
        for (k, v) in r.extra.sorted(by: { $0.key < $1.key }) {
            if let d = v as? Double { parts.append("\(k) = \(String(format: "%.3f", d))") } else { parts.append("\(k) = \(v)") }
        }
        lines.append("- \(r.row): " + parts.joined(separator: "; "))
    }
    return lines.joined(separator: "\n")
}

func jsonText(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
    return String(decoding: data, as: UTF8.self)
}

/// Progress and diagnostics go to standard error, so standard output stays the table or JSON.
func log(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
