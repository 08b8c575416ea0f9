import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Server
import XCTest

/// The studio page's routes: what they serve, with which headers, and what they refuse.
final class StudioPageTests: XCTestCase {
    nonisolated(unsafe) static var shared: TestServer?

    var server: TestServer {
        get throws {
            if let s = Self.shared { return s }
            let s = try TestServer()
            Self.shared = s
            return s
        }
    }

    static let policy = ["default-src 'self'", "img-src 'self' data: blob:", "style-src 'self'", "script-src 'self'"]

    func testPageAndAssetsServe() throws {
        let s = try server
        for (path, type) in [("/", "text/html"), ("/studio/studio.css", "text/css"), ("/studio/studio.js", "text/javascript")] {
            let r = try s.fetch(path)
            XCTAssertEqual(r.status, 200, path)
            XCTAssertTrue(r.header("Content-Type")?.hasPrefix(type) == true, "\(path): \(r.header("Content-Type") ?? "none")")
            XCTAssertEqual(r.header("Cache-Control"), "no-cache", path)
            let policy = try XCTUnwrap(r.header("Content-Security-Policy"), path)
            for directive in Self.policy { XCTAssertTrue(policy.contains(directive), "\(path): \(policy) lacks \(directive)") }
            XCTAssertGreaterThan(r.text.count, 1000, path)
        }
        let page = try s.fetch("/").text
        XCTAssertTrue(page.contains(#"<script src="/studio/studio.js""#))
        XCTAssertTrue(page.contains(#"<link rel="stylesheet" href="/studio/studio.css">"#))
        // the policy allows no inline code or style: the page must not need any
        XCTAssertFalse(page.contains("<style"), "no inline style element")
        XCTAssertFalse(page.contains(" style="), "no style attributes")
        XCTAssertFalse(page.range(of: #"<script(?![^>]*\ssrc=)"#, options: .regularExpression) != nil, "no inline script")
        XCTAssertFalse(page.range(of: #"\son[a-z]+="#, options: .regularExpression) != nil, "no inline event handlers")
        for id in ["prompt", "negative-prompt", "prompt-tokens", "width", "height", "steps", "cfg", "seed", "sampler", "scheduler",
                   "model", "lora-picker", "embedding-picker", "region-layer", "region-list", "generate", "progress-text",
                   "canvas-image", "queue-list", "gallery-grid", "detail-dialog", "detail-info", "detail-use"] {
            XCTAssertTrue(page.contains(#"id="\#(id)""#), "the page has #\(id)")
        }
    }

    /// Every element the script looks up by id is in the page (a renamed id fails here, not in
    /// a user's browser).
    func testScriptIDsExistInThePage() throws {
        let s = try server
        let page = try s.fetch("/").text
        let script = try s.fetch("/studio/studio.js").text
        let lookup = try NSRegularExpression(pattern: #"\$\('([A-Za-z0-9-]+)'\)"#)
        let ids = Set(lookup.matches(in: script, range: NSRange(script.startIndex..., in: script)).compactMap {
            Range($0.range(at: 1), in: script).map { String(script[$0]) }
        })
        XCTAssertGreaterThan(ids.count, 40)
        for id in ids.sorted() { XCTAssertTrue(page.contains(#"id="\#(id)""#), "the script uses #\(id), which the page lacks") }
    }

    /// No CDN, font service or any other origin: the page works offline and leaks nothing.
    func testNoExternalURLs() throws {
        let s = try server
        for path in ["/", "/studio/studio.css", "/studio/studio.js"] {
            let text = try s.fetch(path).text
            for pattern in [#"https?://"#, #"(src|href)\s*=\s*["']//"#, #"url\(\s*["']?(https?:)?//"#, #"@import"#] {
                XCTAssertNil(text.range(of: pattern, options: [.regularExpression, .caseInsensitive]), "\(path) matches \(pattern)")
            }
        }
        // the script writes data into the page as text, never as markup
        let script = try s.fetch("/studio/studio.js").text
        XCTAssertFalse(script.contains("innerHTML"))
        XCTAssertFalse(script.contains("insertAdjacentHTML"))
        XCTAssertFalse(script.contains("document.write"))
    }

    /// The assets are compiled in: nothing else under /studio exists, whatever the path says
    /// (URLSession may tidy a literal ".." away; the encoded forms reach the server as sent).
    func testUnknownPathsAre404() throws {
        let s = try server
        for path in ["/studio/nothing", "/studio/", "/studio/studio.js.map", "/studio/%2e%2e/Package.swift",
                     "/studio/..%2fPackage.swift", "/studio/../Package.swift", "/Package.swift", "/index.html"] {
            XCTAssertEqual(try s.fetch(path).status, 404, path)
        }
    }

    func testBasicAuthCoversThePage() throws {
        let s = try TestServer { $0.apiAuth = "alice:s3cret" }
        for path in ["/", "/studio/studio.js", "/studio/studio.css"] {
            let r = try s.fetch(path)
            XCTAssertEqual(r.status, 401, path)
            XCTAssertEqual(r.header("WWW-Authenticate"), "Basic", path)
            let right = "Basic " + Data("alice:s3cret".utf8).base64EncodedString()
            XCTAssertEqual(try s.fetch(path, headers: ["Authorization": right]).status, 200, path)
        }
    }
}

extension TestServer {
    /// A GET answered as text, with the response's headers.
    func fetch(_ path: String, headers: [String: String] = [:]) throws -> (status: Int, text: String, header: (String) -> String?) {
        let url = URL(string: "http://127.0.0.1:\(port)\(path)")!
        var request = URLRequest(url: url)
        request.timeoutInterval = 30
        for (key, value) in headers { request.setValue(value, forHTTPHeaderField: key) }
        let done = DispatchSemaphore(value: 0)
        let box = FetchBox()
        URLSession.shared.dataTask(with: request) { data, response, error in
            box.value = (data, response as? HTTPURLResponse, error)
            done.signal()
        }.resume()
        done.wait()
        guard let (data, response, _) = box.value, let response else {
            throw box.value?.2 ?? NSError(domain: "TestServer", code: 3)
        }
        let text = String(decoding: data ?? Data(), as: UTF8.self)
        return (response.statusCode, text, { response.value(forHTTPHeaderField: $0) })
    }
}

private final class FetchBox: @unchecked Sendable { var value: (Data?, HTTPURLResponse?, Error?)? }
