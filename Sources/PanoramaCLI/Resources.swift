import Foundation

/// Files the program ships beside its sources (presets, the default model), found at run time
/// from an environment variable or by walking up from the executable (which covers
/// `swift run`, `.build/release/panorama` and an installed `share/panorama` folder).
enum Resources {
    /// The first existing `relativePath` above the executable, or under an install prefix.
    static func locate(_ relativePath: String, environment variable: String) -> URL? {
        let fm = FileManager.default
        if let override = ProcessInfo.processInfo.environment[variable], !override.isEmpty {
            return URL(fileURLWithPath: override)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
        if let executable = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            directory = executable.deletingLastPathComponent()
        }
        for _ in 0..<8 {
            for candidate in [directory.appendingPathComponent(relativePath),
                              directory.appendingPathComponent("share/panorama/\(relativePath)")]
            where fm.fileExists(atPath: candidate.path) {
                return candidate
            }
            directory.deleteLastPathComponent()
        }
        return nil
    }

    /// The folder of preset JSON files.
    static var presets: URL? { locate("presets", environment: "PANORAMA_PRESETS") }

    /// The model used when `--model` is absent.
    static let defaultModelName = "landscape-demo"
    static var defaultModel: URL? { locate("models/\(defaultModelName)", environment: "PANORAMA_MODEL") }
}
