import ArgumentParser
import Foundation
import Imaging
import Models
import Renderer

/// `panorama compose`: a prompt per region, fused by MultiDiffusion.
struct Compose: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a canvas with a prompt per region over a background prompt.",
        discussion: """
            --prompt describes the background; each region adds a prompt inside a rectangle or \
            a mask. Every window is denoised once per prompt whose region touches it and the \
            results are averaged with the masks as weights. During the first --bootstrap-steps \
            steps each region sees a random flat background outside its mask, so its subject \
            forms inside it.

            With few steps (below 8, or --few-step on) StreamMultiDiffusion's fixes apply: each \
            region's mask is blurred (--mask-std) and cut at each step's noise level, so a region \
            starts as its core and widens to its edge as the noise falls, and bootstrapped regions \
            are moved to the centre of their windows on a white background.

            Rectangles are X,Y,W,H in pixels, or in fractions of the canvas when all four are at \
            most 1. A regions file is JSON: a list (or {"regions": [...]}) of objects with \
            "rect": [x, y, w, h] or "mask": "file.png" (PNG, JPEG or WebP, relative to the JSON file), "prompt", \
            and optionally "negative_prompt", "guidance", "weight" and "feather" (pixels).

            Examples:
              panorama compose --W 2048 --H 512 --prompt "a sunny sky" \\
                --region "0,0,0.5,1:a calm sea" --region "0.5,0,0.5,1:snowy mountains"
              panorama compose --W 4096 --H 512 --prompt "rolling hills" --regions layout.json
            """)

    @Option(name: .customLong("W"), help: ArgumentHelp("Width in pixels, a multiple of 8 (default 2048).", valueName: "pixels"))
    var width: Int?

    @Option(name: .customLong("H"), help: ArgumentHelp("Height in pixels, a multiple of 8 (default 512).", valueName: "pixels"))
    var height: Int?

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp("A region: X,Y,W,H:PROMPT (repeatable).", valueName: "x,y,w,h:prompt"))
    var region: [String] = []

    @Option(name: .long, help: ArgumentHelp("Regions from a JSON file (see above).", valueName: "file.json"))
    var regions: String?

    @Option(name: .long, help: "Steps with bootstrapping at the start (default: 20% of the steps; 1 with the few-step fixes).")
    var bootstrapSteps: Int?

    @Option(name: .long, help: ArgumentHelp(
        "StreamMultiDiffusion's few-step fixes: masks that widen as the noise falls, and bootstrapping centred on each region; auto turns them on below 8 steps (default auto).",
        valueName: "auto|on|off"))
    var fewStep: FewStepMode?

    @Option(name: .long, help: ArgumentHelp(
        "With the few-step fixes: blur of the region masks before each step cuts them, in pixels; 0 keeps the masks as drawn (default 8).",
        valueName: "pixels"))
    var maskStd: Double?

    @Option(name: .long, help: ArgumentHelp(
        "With the few-step fixes: what bootstrapped regions see outside their mask, white or a random flat colour per step (MultiDiffusion's) (default white).",
        valueName: "white|random"))
    var bootstrapBackground: BootstrapBackground?

    @Flag(name: .long, help: "With the few-step fixes: bootstrap regions where they are instead of moving each to its window's centre.")
    var uncentredBootstrap = false

    @Option(name: .long, help: ArgumentHelp("Soft rectangle edges: the weight rises over this many pixels; edges on the canvas border stay hard (default 0).", valueName: "pixels"))
    var feather: Double?

    @Flag(name: .long, help: "Resize mask images of another size than the canvas (nearest neighbour) instead of failing.")
    var scaleMasks = false

    @Flag(name: .long, help: "360° canvas: the right edge wraps to the left.")
    var circular = false

    @OptionGroup var options: GenerationOptions

    /// A region as given, before it is checked against the canvas.
    struct Spec: Decodable {
        var rect: [Double]?
        var mask: String?
        var prompt: String
        var negativePrompt: String?
        var guidance: Float?
        var weight: Float?
        var feather: Double?

        enum CodingKeys: String, CodingKey {
            case rect, mask, prompt, guidance, weight, feather
            case negativePrompt = "negative_prompt"
        }
    }

    func run() throws {
        var progress = ProgressReporter(quiet: options.quiet)
        let (modelURL, preset) = try options.setUp()
        let png = try options.recalled()
        var settings = try options.settings(width: width ?? png?.settings.width ?? preset?.width ?? 2048,
                                            height: height ?? png?.settings.height ?? preset?.height ?? 512,
                                            circular: circular || (preset?.circular ?? false), preset: preset)
        var specs = try region.map(parseRegion)
        var base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        if let regions {
            let url = URL(fileURLWithPath: regions)
            specs += try readRegions(url)
            base = url.deletingLastPathComponent()
        }
        // the PNG's regions (masks relative to its folder) unless regions are given here
        if specs.isEmpty, let png, let recorded = png.chunks["regions"] {
            specs = try readRegions(Data(recorded.utf8), source: "the regions chunk of \(png.url.path)")
            base = png.url.deletingLastPathComponent()
        }
        guard !specs.isEmpty else { throw ValidationError("give at least one --region or a --regions file") }
        let recalledFewStep = png.map { $0.infotext["Few-step regions"].flatMap(FewStepMode.init(rawValue:)) ?? .off }
        var fewStepSettings = FewStepRegions()
        if let std = maskStd ?? png?.infotext["Mask std"].flatMap(Double.init) { fewStepSettings.maskStd = std }
        if let background = bootstrapBackground ?? png?.infotext["Bootstrap background"].flatMap(BootstrapBackground.init(rawValue:)) {
            fewStepSettings.bootstrapBackground = background
        }
        fewStepSettings.centredBootstrap = !uncentredBootstrap && png?.infotext["Centred bootstrap"] != "off"
        var composition = Composition(regions: try specs.enumerated().map { try makeRegion($1, number: $0 + 1, base: base, settings: settings) },
                                      bootstrapSteps: 0, fewStepMode: fewStep ?? recalledFewStep ?? .automatic,
                                      fewStep: fewStepSettings)
        let usesFewStep = composition.usesFewStep(steps: settings.steps)
        composition.bootstrapSteps = bootstrapSteps ?? png?.settings.bootstrapSteps
            ?? Composition.defaultBootstrapSteps(steps: settings.steps, fewStep: usesFewStep)
        let outputURL = try options.outputLocation(defaultBase: "composition-\(settings.width)x\(settings.height)-\(settings.seed)")

        let pipeline = try options.loadPipeline(
            modelURL, settings: &settings,
            prompts: [settings.prompt, settings.negativePrompt] + composition.regions.flatMap { [$0.prompt.prompt, $0.prompt.negativePrompt] },
            progress: progress)
        let model = pipeline.model
        try pipeline.validate(composition, for: settings)

        var loop = try pipeline.regionLoop(settings, composition: composition)
        progress.note("\(settings.width)x\(settings.height): \(composition.regions.count) regions, \(loop.views.count) windows, "
                      + "\(usesFewStep ? "up to " : "")\(loop.denoisesPerStep) denoises per step x \(loop.stepCount) steps (\(composition.bootstrapSteps) bootstrapped"
                      + (usesFewStep ? "; few-step regions, mask std \(composition.fewStep.maskStd)" : "") + ")")
        let extra = composition.infotextFields(steps: settings.steps)
        try options.finish(&loop, pipeline: pipeline, settings: settings, progress: &progress, output: outputURL,
                           parameters: try options.parameters(settings, model: model, extra: extra,
                                                              otherPrompts: composition.regions.flatMap { [$0.prompt.prompt, $0.prompt.negativePrompt] }),
                           extraText: [(key: "regions", value: try regionsText(specs))])
        print(outputURL.path)
    }

    /// "X,Y,W,H:PROMPT".
    func parseRegion(_ text: String) throws -> Spec {
        guard let colon = text.firstIndex(of: ":") else {
            throw ValidationError("--region \"\(text)\": expected X,Y,W,H:PROMPT")
        }
        let numbers = text[..<colon].split(separator: ",", omittingEmptySubsequences: false)
            .map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard numbers.count == 4, numbers.allSatisfy({ $0 != nil }) else {
            throw ValidationError("--region \"\(text)\": the rectangle must be four numbers X,Y,W,H")
        }
        return Spec(rect: numbers.map { $0! }, prompt: String(text[text.index(after: colon)...]))
    }

    func readRegions(_ url: URL) throws -> [Spec] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ValidationError("\(url.path): cannot read the regions file: \(error.localizedDescription)")
        }
        return try readRegions(data, source: url.path)
    }

    /// Regions from JSON; `source` names where it came from in errors.
    func readRegions(_ data: Data, source: String) throws -> [Spec] {
        struct Wrapper: Decodable { let regions: [Spec] }
        do {
            let isList = data.first { !" \t\r\n".utf8.contains($0) } == UInt8(ascii: "[")
            return isList ? try JSONDecoder().decode([Spec].self, from: data)
                : try JSONDecoder().decode(Wrapper.self, from: data).regions
        } catch {
            throw ValidationError("\(source): not a valid regions file: \(describe(error))")
        }
    }

    func makeRegion(_ spec: Spec, number: Int, base: URL, settings: PanoramaSettings) throws -> Region {
        let name = "region \(number)"
        let prompt = RegionPrompt(prompt: spec.prompt, negativePrompt: spec.negativePrompt ?? "",
                                  guidanceScale: spec.guidance, weight: spec.weight ?? 1)
        switch (spec.rect, spec.mask) {
        case let (rect?, nil):
            guard rect.count == 4, rect.allSatisfy(\.isFinite) else { throw ValidationError("\(name): rect must be [x, y, w, h]") }
            let fractions = rect.allSatisfy { $0 <= 1 }
            let (sx, sy) = fractions ? (Double(settings.width), Double(settings.height)) : (1, 1)
            return Region(shape: .rectangle(x: rect[0] * sx, y: rect[1] * sy, width: rect[2] * sx, height: rect[3] * sy,
                                            feather: spec.feather ?? feather ?? 0), prompt: prompt)
        case let (nil, mask?):
            let url = mask.hasPrefix("/") ? URL(fileURLWithPath: mask) : base.appendingPathComponent(mask)
            var image = try ImageFile.read(url)
            if image.width != settings.width || image.height != settings.height {
                guard scaleMasks else {
                    throw ValidationError("\(name): the mask \(url.path) is \(image.width)x\(image.height) but the canvas is \(settings.width)x\(settings.height); pass --scale-masks to resize it")
                }
                image = image.resizedNearest(width: settings.width, height: settings.height)
            }
            let values = (0..<(image.width * image.height)).map { i in
                Float(Int(image.pixels[3 * i]) + Int(image.pixels[3 * i + 1]) + Int(image.pixels[3 * i + 2])) / (3 * 255)
            }
            return Region(shape: .mask(width: image.width, height: image.height, values: values), prompt: prompt)
        default:
            throw ValidationError("\(name): give exactly one of rect and mask")
        }
    }

    /// The regions as JSON, for the PNG's "regions" text chunk.
    func regionsText(_ specs: [Spec]) throws -> String {
        let objects: [[String: Any]] = specs.map { spec in
            var o: [String: Any] = ["prompt": spec.prompt]
            if let rect = spec.rect { o["rect"] = rect }
            if let mask = spec.mask { o["mask"] = mask }
            if let n = spec.negativePrompt { o["negative_prompt"] = n }
            if let g = spec.guidance { o["guidance"] = Double(g) }
            if let w = spec.weight { o["weight"] = Double(w) }
            if let f = spec.feather ?? feather, f > 0 { o["feather"] = f }
            return o
        }
        let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    private func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing \"\(key.stringValue)\"" + (context.codingPath.isEmpty ? "" : " in entry \(context.codingPath.map(\.stringValue).joined(separator: "."))")
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "\(context.debugDescription) at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.dataCorrupted(let context):
            return context.debugDescription
        default:
            return "\(error)"
        }
    }
}

extension FewStepMode: ExpressibleByArgument {}
extension BootstrapBackground: ExpressibleByArgument {}
