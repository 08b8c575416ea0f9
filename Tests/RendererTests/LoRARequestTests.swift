import Foundation
import Renderer
import XCTest

/// `--lora` options and `<lora:…>` tags read into requests, and names found in folders.
final class LoRARequestTests: XCTestCase {
    func testOptions() throws {
        XCTAssertEqual(try LoRARequest(option: "/x/a.safetensors"), LoRARequest(source: .file(URL(fileURLWithPath: "/x/a.safetensors"))))
        let weighted = try LoRARequest(option: "/x/b:c.safetensors:0.6")
        XCTAssertEqual(weighted.source, .file(URL(fileURLWithPath: "/x/b:c.safetensors")))
        XCTAssertEqual([weighted.textEncoderWeight, weighted.unetWeight], [0.6, 0.6])
        XCTAssertThrowsError(try LoRARequest(option: ":0.5"))
    }

    func testTagsAcrossPrompts() throws {
        let requests = try LoRARequest.fromPrompts([
            "a <lora:a:0.5> b <lora:b:0.3:0.9> <lora:c:te=0.2:unet=0.4> <lora:d>",
            "region <lora:a:0.5>",                       // the same tag in another prompt: once
            "twice <lora:e:1><lora:e:1>",                // repeated in one prompt: twice, as A1111 does
        ])
        XCTAssertEqual(requests.map(\.source), ["a", "b", "c", "d", "e", "e"].map { .name($0) })
        XCTAssertEqual(requests.map(\.textEncoderWeight), [0.5, 0.3, 0.2, 1, 1, 1])
        XCTAssertEqual(requests.map(\.unetWeight), [0.5, 0.9, 0.4, 1, 1, 1])
        XCTAssertEqual(LoRARequest.strippingTags("x <lora:a:1>y"), "x y")
        XCTAssertThrowsError(try LoRARequest.fromPrompts(["<hypernet:h:1>"]))
        XCTAssertThrowsError(try LoRARequest.fromPrompts(["<lora: :1>"]))
        XCTAssertThrowsError(try LoRARequest.fromPrompts(["<lora:a:nan>"]))
    }

    func testLibraryFindsNamesInSubfolders() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lora-library-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let nested = root.appendingPathComponent("styles/old")
        try FileManager.default.createDirectory(at: nested, withIntermediateDirectories: true)
        for name in ["styles/old/grain.pt", "styles/old/grain.safetensors", "notes.txt"] {
            try Data().write(to: root.appendingPathComponent(name))
        }
        let library = LoRALibrary(folders: [root.appendingPathComponent("absent"), root])
        XCTAssertEqual(try library.file(named: "grain").lastPathComponent, "grain.safetensors")
        XCTAssertThrowsError(try library.file(named: "notes")) { error in
            XCTAssertTrue("\(error)".contains("grain"), "\(error)")
        }
    }
}
