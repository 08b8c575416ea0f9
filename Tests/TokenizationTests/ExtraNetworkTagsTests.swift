import Tokenization
import XCTest

/// A1111's `<(\w+):([^>]+)>` tags found and removed.
final class ExtraNetworkTagsTests: XCTestCase {
    func testTagsAreFoundAndRemoved() {
        let (text, tags) = ExtraNetworkTags.extract("a cat <lora:film grain:0.8>, <lyco:x:0.5:1.2:unet=0.3>sitting<lora:y>")
        XCTAssertEqual(text, "a cat , sitting")
        XCTAssertEqual(tags.map(\.kind), ["lora", "lyco", "lora"])
        XCTAssertEqual(tags[0].arguments, ["film grain", "0.8"])
        XCTAssertEqual(tags[1].positional, ["x", "0.5", "1.2"])
        XCTAssertEqual(tags[1].named, ["unet": "0.3"])
        XCTAssertEqual(tags[2].text, "<lora:y>")
    }

    func testWhatIsNotATagStays() {
        for prompt in ["a <b> c", "<:x:1>", "<lora:>", "<lora x:1>", "<lora:x", "(a:1.2) [b] <", "émoji 🌄 <ünï:café:1>"] {
            let (text, tags) = ExtraNetworkTags.extract(prompt)
            if prompt.hasPrefix("émoji") {
                XCTAssertEqual(text, "émoji 🌄 ")
                XCTAssertEqual(tags.first?.kind, "ünï")
            } else {
                XCTAssertEqual(text, prompt, prompt)
                XCTAssertTrue(tags.isEmpty, prompt)
            }
        }
        // the arguments run to the first ">"; an empty argument is kept, as Python's split keeps it
        XCTAssertEqual(ExtraNetworkTags.extract("<lora:a::1>>").tags.first?.arguments, ["a", "", "1"])
        XCTAssertEqual(ExtraNetworkTags.extract("<lora:a::1>>").text, ">")
    }
}
