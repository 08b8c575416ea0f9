import Foundation
import XCTest

/// Runs the Python scripts that drive the server as real clients do (A1111's `webuiapi`, a
/// browser through Selenium). The interpreter is `PANORAMA_PYTHON` (`.ci/run` makes a venv with
/// the packages), else `python3` on the PATH. Without the packages a test is skipped, unless
/// `PANORAMA_REQUIRE_PYTHON_TESTS=1` (set by `.ci/run`), where it fails: CI must not skip them.
enum PythonScript {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Python")

    static var interpreter: String {
        ProcessInfo.processInfo.environment["PANORAMA_PYTHON"] ?? "/usr/bin/env"
    }

    private static var prefix: [String] {
        ProcessInfo.processInfo.environment["PANORAMA_PYTHON"] == nil ? ["python3"] : []
    }

    static var required: Bool { ProcessInfo.processInfo.environment["PANORAMA_REQUIRE_PYTHON_TESTS"] == "1" }

    /// Skips (or, when required, fails) unless the interpreter imports every module.
    static func requireModules(_ modules: [String]) throws {
        let check = "import " + modules.joined(separator: ", ")
        let result = try? run(arguments: ["-c", check], timeout: 60)
        guard result?.status == 0 else {
            let message = "Python with \(modules.joined(separator: ", ")) is not available (set PANORAMA_PYTHON; .ci/run makes one): \(result?.output ?? "no interpreter")"
            if required { throw NSError(domain: "PythonScript", code: 1, userInfo: [NSLocalizedDescriptionKey: message]) }
            throw XCTSkip(message)
        }
    }

    /// Runs `Python/<name>` with `arguments`; returns its exit status and its output (stdout and
    /// stderr together). Killed after `timeout` seconds.
    static func run(script name: String, arguments: [String], environment: [String: String] = [:],
                    timeout: TimeInterval) throws -> (status: Int32, output: String) {
        try run(arguments: [scripts.appendingPathComponent(name).path] + arguments, environment: environment, timeout: timeout)
    }

    static func run(arguments: [String], environment: [String: String] = [:],
                    timeout: TimeInterval) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: interpreter)
        process.arguments = prefix + arguments
        var env = ProcessInfo.processInfo.environment
        env["PYTHONUNBUFFERED"] = "1"
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-python-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? handle.close()
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        return (process.terminationStatus, text)
    }
}
