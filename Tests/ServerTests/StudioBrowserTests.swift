import Foundation
import Server
import XCTest

/// The studio page in a real browser (headless Chromium through Selenium) against a server with
/// the bundled model: prompt, two regions drawn with the mouse, generate, live previews, the
/// result in the gallery, its PNG Info and "Use these parameters". See
/// `Python/studio_browser_check.py`.
final class StudioBrowserTests: XCTestCase {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func testStudioInBrowser() throws {
        try PythonScript.requireModules(["selenium"])
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] where !FileManager.default.isExecutableFile(atPath: tool) {
            let message = "\(tool) is not installed (apt-get install chromium chromium-driver)"
            if PythonScript.required { return XCTFail(message) }
            throw XCTSkip(message)
        }
        let model = Self.packageRoot.appendingPathComponent("models/landscape-demo")
        let server = try TestServer { c in
            c.defaultModel = model
            c.tokenizer = model.appendingPathComponent("tokenizer")
            c.modelsDirectory = nil
            c.loraDirectory = Self.packageRoot.appendingPathComponent("models/lora")
        }
        defer { try? FileManager.default.removeItem(at: server.outputs) }
        let screenshots: URL
        if let artifacts = ProcessInfo.processInfo.environment["PANORAMA_ARTIFACTS"] {
            screenshots = URL(fileURLWithPath: artifacts).appendingPathComponent("studio")
        } else {
            screenshots = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-studio-\(UUID().uuidString)")
        }
        print("studio browser check: screenshots in \(screenshots.path)")
        let start = Date()
        let result = try PythonScript.run(script: "studio_browser_check.py",
                                          arguments: ["--url", "http://127.0.0.1:\(server.port)/", "--screenshots", screenshots.path],
                                          timeout: 150)
        print(result.output)
        print("studio browser check: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(result.status, 0, "the browser check failed (screenshots in \(screenshots.path)):\n\(result.output)")
    }
}
