import Foundation
import Renderer
import Schedulers
import Tensors
import Weights
import XCTest

/// A loop checkpointed after step k, written to a state file, read back and restored into a
/// fresh loop ends with latents bit-identical to a loop that never stopped.
final class RenderStateTests: XCTestCase {
    private func settings(_ configure: (inout PanoramaSettings) -> Void) -> PanoramaSettings {
        var s = PanoramaSettings(prompt: "snowy mountains at sunset", width: 768, height: 512)
        s.steps = 5
        s.seed = 31
        s.stride = 16
        configure(&s)
        return s
    }

    private func roundTrip(_ checkpoint: LoopCheckpoint) throws -> LoopCheckpoint {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString).state")
        defer { try? FileManager.default.removeItem(at: url) }
        let record = RenderState.Record(command: "render", arguments: [], directory: "/", seed: "31", picture: 0, pictures: 1,
                                        outputs: ["/x.png"], step: 1, steps: 5, identity: ["a": "b"])
        try RenderState(record: record, checkpoint: checkpoint).write(to: url)
        let read = try RenderState.read(url)
        XCTAssertEqual(read.record, record)
        return read.checkpoint
    }

    func testRestoredLoopsEndBitIdentical() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        let cases: [(String, PanoramaSettings)] = [
            ("ddim", settings { _ in }),
            ("euler-a canvas noise", settings { $0.sampler = .eulerAncestral }),
            ("euler-a per-window noise", settings { $0.sampler = .eulerAncestral; $0.noiseFusion = .perWindow }),
            ("dpm++2m", settings { $0.sampler = .dpmSolver2M }),
            ("spot dpm++2m", settings { $0.sampler = .dpmSolver2M; $0.spotDiffusion = true }),
            ("spot euler-a", settings { $0.sampler = .eulerAncestral; $0.spotDiffusion = true }),
        ]
        for (name, s) in cases {
            var whole = try p.denoisingLoop(s)
            while whole.next() != nil {}
            for k in [1, 3, 5] {
                var first = try p.denoisingLoop(s)
                for _ in 0..<k { _ = first.next() }
                var second = try p.denoisingLoop(s)
                try second.restore(try roundTrip(first.checkpoint()))
                while second.next() != nil {}
                XCTAssertEqual(second.latents.data, whole.latents.data, "\(name), stopped after step \(k)")
            }
        }
    }

    func testImageToImageAndRegionLoopsResume() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        let s = settings { $0.sampler = .dpmSolver2M }
        var generator = TorchGenerator(seed: 5)
        let image = generator.randn([1, 4, 64, 96])
        var whole = try p.imageToImageLoop(s, latents: image, strength: 0.6)
        while whole.next() != nil {}
        var first = try p.imageToImageLoop(s, latents: image, strength: 0.6)
        _ = first.next()
        var second = try p.imageToImageLoop(s, latents: image, strength: 0.6)
        try second.restore(try roundTrip(first.checkpoint()))
        while second.next() != nil {}
        XCTAssertEqual(second.latents.data, whole.latents.data, "img2img")

        let composition = Composition(regions: [Region(shape: .rectangle(x: 320, y: 80, width: 400, height: 320),
                                                       prompt: RegionPrompt(prompt: "a lighthouse"))],
                                      bootstrapSteps: 2)
        var regionWhole = try p.regionLoop(s, composition: composition)
        while regionWhole.next() != nil {}
        for k in [1, 3] {
            var a = try p.regionLoop(s, composition: composition)
            for _ in 0..<k { _ = a.next() }
            var b = try p.regionLoop(s, composition: composition)
            try b.restore(try roundTrip(a.checkpoint()))
            while b.next() != nil {}
            XCTAssertEqual(b.latents.data, regionWhole.latents.data, "regions, stopped after step \(k)")
        }
    }

    func testAStateOfAnotherShapeIsRefusedAndChangesNothing() throws {
        let p = try PanoramaParityTests.sharedPipeline()
        var small = try p.denoisingLoop(settings { _ in })
        _ = small.next()
        var wide = try p.denoisingLoop(settings { $0.width = 1024 })
        let before = wide.latents.data
        XCTAssertThrowsError(try wide.restore(small.checkpoint())) { error in
            XCTAssertTrue("\(error)".contains("canvas latents are [1, 4, 64, 96]"), "\(error)")
        }
        XCTAssertEqual(wide.latents.data, before)
        // a MultiDiffusion state does not restore a SpotDiffusion loop
        var spot = try p.denoisingLoop(settings { $0.spotDiffusion = true })
        XCTAssertThrowsError(try spot.restore(small.checkpoint()))
        // a window history of the wrong size
        var dpm = try p.denoisingLoop(settings { $0.sampler = .dpmSolver2M })
        _ = dpm.next()
        var bad = dpm.checkpoint()
        bad.tensors["view0"] = Tensor(zeros: [1, 4, 8, 8])
        var fresh = try p.denoisingLoop(settings { $0.sampler = .dpmSolver2M })
        XCTAssertThrowsError(try fresh.restore(bad)) { XCTAssertTrue("\($0)".contains("view0's history"), "\($0)") }
        bad = dpm.checkpoint()
        bad.numbers["view0"] = 99
        XCTAssertThrowsError(try fresh.restore(bad)) { XCTAssertTrue("\($0)".contains("step index 99"), "\($0)") }
    }

    func testHostileStateFilesAreRefused() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("hostile-\(UUID().uuidString).state")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data("not a state".utf8).write(to: url)
        XCTAssertThrowsError(try RenderState.read(url))
        // a valid safetensors file that is not a state
        let latents = [(name: "latents", tensor: Tensor(zeros: [1, 4, 8, 8]))]
        try SafeTensorsWriter.write(latents, dtype: .f32, metadata: ["format": "something else"], to: url)
        XCTAssertThrowsError(try RenderState.read(url)) { XCTAssertTrue("\($0)".contains("not a panorama state"), "\($0)") }
        try SafeTensorsWriter.write(latents, dtype: .f32, metadata: ["format": RenderState.format, "version": "99"], to: url)
        XCTAssertThrowsError(try RenderState.read(url)) { XCTAssertTrue("\($0)".contains("version 99"), "\($0)") }
    }

    func testGeneratorPositionRoundTrips() {
        var g = TorchGenerator(seed: 77)
        _ = g.randn([3]) // leaves a cached normal
        var copy = TorchGenerator(position: g.position)!
        XCTAssertEqual(g.randn([5]).data, copy.randn([5]).data)
        XCTAssertEqual(g.randn([40]).data, copy.randn([40]).data)
        XCTAssertNil(TorchGenerator(position: .init(words: [1, 2], index: 0, cachedNormalBits: nil)))
    }
}
