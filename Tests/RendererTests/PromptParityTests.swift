import Foundation
import Models
import Renderer
import Tokenization
import Tensors
import Weights
import XCTest

/// A1111 prompts end to end: diffusers' StableDiffusionPanoramaPipeline given the A1111 reference's
/// prompt_embeds / negative_prompt_embeds (tools/reference/make_prompt_encoding_fixtures.py →
/// golden/prompts/pano.*) on tiny-pano, 512x640, 8 DDIM steps, guidance 7.5, seed 1234: a 3-chunk
/// weighted prompt with BREAK against a 1-chunk weighted negative prompt (padded), with and without
/// clip skip, and a prompt with textual-inversion embeddings; and diffusers' own textual inversion
/// (`load_textual_inversion`, prompt strings, one multi-vector embedding in the negative prompt) against
/// `--emphasis none`. Final latents within 1e-3 · max|b|.
final class PromptParityTests: XCTestCase {
    struct Case: Decodable {
        let key: String
        let prompt: String
        let negative_prompt: String
        let clip_skip: Int
        let chunks: Int
        let emphasis: String
    }
    struct Cases: Decodable {
        let cases: [Case]
        let height: Int, width: Int, steps: Int, seed: UInt64
        let guidance: Float
    }

    static let prompts = PanoramaParityTests.fixtures.appendingPathComponent("golden/prompts")

    func testPanoramasMatchDiffusersGivenReferenceEmbeddings() throws {
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: Self.prompts.appendingPathComponent("pano.json")))
        let golden = try SafeTensorsFile(url: Self.prompts.appendingPathComponent("pano.safetensors"))
        let pipeline = try PanoramaParityTests.sharedPipeline()
        XCTAssertEqual(cases.cases.count, 4)
        for c in cases.cases {
            var s = PanoramaSettings(prompt: c.prompt, width: cases.width, height: cases.height)
            s.negativePrompt = c.negative_prompt
            s.steps = cases.steps
            s.seed = cases.seed
            s.guidanceScale = cases.guidance
            s.clipSkip = c.clip_skip
            s.emphasis = PromptEmphasis(rawValue: c.emphasis)!
            s.embeddingDirectories = [Self.prompts.appendingPathComponent("embeddings")]
            let guidance = try pipeline.guidance(s)
            XCTAssertEqual(guidance.conditional.shape[1], 77 * c.chunks, c.key)
            XCTAssertEqual(guidance.unconditional.shape, guidance.conditional.shape, c.key)
            var loop = try pipeline.denoisingLoop(s)
            while loop.next() != nil {}
            let expected = try golden.tensor(c.key)
            let diff = loop.latents.maxAbsDifference(expected)
            XCTAssertLessThanOrEqual(diff, 1e-3 * expected.maxAbs, "\(c.key): final latents, max diff \(diff) of \(expected.maxAbs)")
        }
    }

    /// Prompts that share UNet calls (regions) are encoded to one length, with empty-prompt chunks.
    func testRegionPromptsArePaddedToOneLength() throws {
        let pipeline = try PanoramaParityTests.sharedPipeline()
        var background = PanoramaSettings(prompt: "sky", width: 640, height: 512)
        background.negativePrompt = "a BREAK b BREAK c"
        var region = background
        region.prompt = "sea"
        region.negativePrompt = ""
        region.guidanceScale = 1
        let guidances = try pipeline.guidances([background, region])
        XCTAssertEqual(guidances.map(\.conditional.shape), [[1, 231, 32], [1, 231, 32]])
        XCTAssertEqual(guidances[0].unconditional.shape, [1, 231, 32])
        // The padding is the empty prompt's chunk.
        let empty = try pipeline.guidance(PanoramaSettings(prompt: "", width: 640, height: 512)).conditional
        let tail = Tensor(shape: [1, 77, 32], data: Array(guidances[1].conditional.data[(154 * 32)...]))
        XCTAssertEqual(tail.maxAbsDifference(empty), 0)
    }
}
