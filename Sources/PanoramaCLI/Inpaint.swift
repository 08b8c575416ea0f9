import ArgumentParser
import Foundation
import Imaging
import Models
import Renderer
import Tensors
import Weights

/// `panorama inpaint`: repaint the white part of a mask on a picture of any size.
struct Inpaint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Repaint the masked part of a picture (white in the mask), at any size.",
        discussion: """
            MultiDiffusion windows cover the whole picture. With an inpainting model (9 input \
            channels, e.g. SD 1.5 inpainting) every window sees its part of the mask and of the \
            masked picture; with any other model the known part is put back, noised to the \
            current step, after every step. The result keeps the input's pixels outside the \
            mask, blended over --mask-blur pixels at its edge.

            Examples:
              panorama inpaint --input beach.jpg --mask sky.png --prompt "a stormy sky"
              panorama inpaint --input panorama.png --mask boat.png --prompt "a sailing boat" --strength 0.8 --mask-blur 8
            """)

    @Option(name: .long, help: ArgumentHelp("The picture: PNG, JPEG or WebP; its size is the canvas (padded to multiples of 8 while rendering).", valueName: "file"))
    var input: String

    @Option(name: .long, help: ArgumentHelp("What to repaint: white (or light) where the model paints, black where the input stays; PNG, JPEG or WebP of the input's size.", valueName: "file"))
    var mask: String

    @Flag(name: .long, help: "Resize a mask of another size to the input's instead of failing.")
    var scaleMask = false

    @Option(name: .long, help: "How much to change under the mask: 1 paints from noise, less starts from the input (default 1).")
    var strength: Double?

    @Option(name: .long, help: ArgumentHelp("Blur of the mask's edge in pixels (a Gaussian's standard deviation, as AUTOMATIC1111's mask blur) (default 4).", valueName: "pixels"))
    var maskBlur: Double = 4

    @Flag(name: .long, help: "The input is a 360° panorama: windows and the VAE wrap around its left and right edges.")
    var circular = false

    @OptionGroup var options: GenerationOptions

    func run() throws {
        guard maskBlur >= 0 && maskBlur.isFinite else { throw ValidationError("--mask-blur must be 0 or more pixels, not \(maskBlur)") }
        let (modelURL, preset) = try options.setUp()
        let inputURL = URL(fileURLWithPath: input), maskURL = URL(fileURLWithPath: mask)
        let picture = try ImageFile.read(inputURL)
        var maskImage = try ImageFile.read(maskURL)
        if maskImage.width != picture.width || maskImage.height != picture.height {
            guard scaleMask else {
                throw ValidationError("the mask \(mask) is \(maskImage.width)x\(maskImage.height) but the input is \(picture.width)x\(picture.height); pass --scale-mask to resize it")
            }
            maskImage = maskImage.resized(width: picture.width, height: picture.height, linearLight: false)
        }
        let pixelMask = maskImage.maskTensor()
        let painted = pixelMask.data.reduce(0) { $0 + ($1 >= 0.5 ? 1 : 0) }
        guard painted > 0 else { throw ValidationError("the mask \(mask) has no white (≥ 50 % grey) pixel: nothing to repaint") }
        guard painted < pixelMask.count else {
            throw ValidationError("the mask \(mask) is white everywhere: nothing of the input is kept; render from the prompt instead (panorama render)")
        }
        let extra = [Infotext.Field("Mask blur", MaskedRender.number(maskBlur)),
                     Infotext.Field("Inpaint input", inputURL.lastPathComponent),
                     Infotext.Field("Input hash", try MaskedRender.shortHash(inputURL)),
                     Infotext.Field("Mask", maskURL.lastPathComponent),
                     Infotext.Field("Mask hash", try MaskedRender.shortHash(maskURL))]
        let stem = inputURL.deletingPathExtension().lastPathComponent
        try MaskedRender(options: options, picture: picture, mask: pixelMask, overlay: Mask.blurred(pixelMask, radius: maskBlur),
                         maskBlur: maskBlur, strength: strength, defaultStrength: 1, circular: circular, extra: extra)
            .run(modelURL: modelURL, preset: preset, outputBase: { "\(stem)-inpainted-\($0)" })
    }
}

/// `panorama outpaint`: a picture extended into a panorama.
struct Outpaint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Extend a picture into a wider panorama (or a 360° wrap) around it.",
        discussion: """
            The input is scaled to the canvas height (unless --keep-size), placed by --anchor, \
            and the rest of the canvas is generated with MultiDiffusion windows that also see \
            the input, so the new part continues it. With --overlap the model also repaints a \
            band of that many pixels along the input's border for a softer join; by default the \
            input's pixels come back unchanged.

            Examples:
              panorama outpaint --input photo.jpg --W 4096 --H 512 --prompt "a mountain lake at dawn"
              panorama outpaint --input photo.jpg --W 4096 --H 512 --circular --overlap 16 --prompt "..."
              panorama outpaint --input tower.png --W 2048 --H 512 --anchor left --preset landscape-demo-lcm --prompt "..."
            """)

    @Option(name: .long, help: ArgumentHelp("The picture to extend: PNG, JPEG or WebP.", valueName: "file"))
    var input: String

    @Option(name: .customLong("W"), help: ArgumentHelp("Canvas width in pixels, a multiple of 8 (default 2048).", valueName: "pixels"))
    var width: Int?

    @Option(name: .customLong("H"), help: ArgumentHelp("Canvas height in pixels, a multiple of 8 (default 512).", valueName: "pixels"))
    var height: Int?

    @Option(name: .long, help: ArgumentHelp("Where the input goes: left, center, right, or X,Y for its top-left corner in canvas pixels (default center).", valueName: "where"))
    var anchor = "center"

    @Flag(name: .long, help: "Keep the input at its own size instead of scaling it to the canvas height.")
    var keepSize = false

    @Option(name: .long, help: ArgumentHelp("Pixels of the input's border that the model may repaint, for a soft join (default 0: the input is kept exactly).", valueName: "pixels"))
    var overlap = 0

    @Option(name: .long, help: "How far the new area may depart from the input's border colours stretched outwards: 1 paints it from noise alone, less starts from those colours (default 1 with an inpainting model, 0.9 with others, whose new area otherwise ignores the input's colours).")
    var strength: Double?

    @Option(name: .long, help: ArgumentHelp("Blur of the join in pixels: the decoded picture fades into the input over about 5x this inside the input's border (or the repainted band), hiding the VAE's round trip; 0 pastes the input as it is (default 4).", valueName: "pixels"))
    var maskBlur: Double = 4

    @Flag(name: .long, help: "360° panorama: the canvas wraps around, so the generated part also joins the input's right edge to its left.")
    var circular = false

    @OptionGroup var options: GenerationOptions

    func run() throws {
        guard overlap >= 0 else { throw ValidationError("--overlap must be 0 or more pixels, not \(overlap)") }
        guard maskBlur >= 0 && maskBlur.isFinite else { throw ValidationError("--mask-blur must be 0 or more pixels, not \(maskBlur)") }
        guard let where_ = OutpaintLayout.Anchor(anchor) else {
            throw ValidationError("unknown --anchor \"\(anchor)\"; available: left, center, right or X,Y (pixels)")
        }
        let inputURL = URL(fileURLWithPath: input)
        let picture = try ImageFile.read(inputURL)
        let (modelURL, preset) = try options.setUp()
        let png = try options.recalled()?.settings
        let canvasWidth = width ?? png?.width ?? preset?.width ?? 2048, canvasHeight = height ?? png?.height ?? preset?.height ?? 512
        let layout: OutpaintLayout
        do {
            layout = try OutpaintLayout(inputWidth: picture.width, inputHeight: picture.height, canvasWidth: canvasWidth,
                                        canvasHeight: canvasHeight, anchor: where_, keepSize: keepSize,
                                        circular: circular || (preset?.circular ?? false))
        } catch let error as OutpaintError {
            throw ValidationError(error.description)
        }
        let known = layout.knownRectangle(overlap: overlap)
        guard known.width > 0 && known.height > 0 else {
            throw ValidationError("--overlap \(overlap) repaints the whole \(layout.width)x\(layout.height) input; use a smaller overlap")
        }
        let canvas = layout.canvasImage(picture)
        let mask = Tensor(shape: [1, 1, canvasHeight, canvasWidth], data: layout.mask(overlap: overlap))
        var extra = [Infotext.Field("Outpaint input", inputURL.lastPathComponent),
                     Infotext.Field("Input hash", try MaskedRender.shortHash(inputURL)),
                     Infotext.Field("Outpaint placement", "\(layout.width)x\(layout.height)+\(layout.x)+\(layout.y)")]
        if overlap > 0 { extra.append(Infotext.Field("Outpaint overlap", String(overlap))) }
        extra.append(Infotext.Field("Mask blur", MaskedRender.number(maskBlur)))
        let stem = inputURL.deletingPathExtension().lastPathComponent
        try MaskedRender(options: options, picture: canvas, mask: mask, overlay: layout.overlayMask(overlap: overlap, blur: maskBlur),
                         maskBlur: 0, strength: strength, defaultStrength: 0.9, circular: layout.circular, extra: extra)
            .run(modelURL: modelURL, preset: preset, outputBase: { "\(stem)-outpainted-\(canvasWidth)x\(canvasHeight)-\($0)" })
    }
}

/// The render both commands share: a canvas picture, the mask of what to paint, and the blend of
/// the result over the picture.
struct MaskedRender {
    let options: GenerationOptions
    /// The canvas-sized picture (the input, or the input placed on the outpainting canvas).
    let picture: RGBImage
    /// [1, 1, H, W], 1 where the model paints.
    let mask: Tensor
    /// [1, 1, H, W]: how the decoded picture is blended over `picture` (1: decoded).
    let overlay: Tensor
    /// Blur of the mask the model paints with (A1111 blurs it too; it is cut at 50 % there).
    let maskBlur: Double
    /// The strength asked for; nil: 1 with an inpainting model, else `defaultStrength`.
    let strength: Double?
    let defaultStrength: Double
    let circular: Bool
    let extra: [Infotext.Field]

    /// Renders, blends and writes the PNG; `outputBase(seed)` names it unless --output does.
    func run(modelURL: URL, preset: Preset?, outputBase: (UInt64) -> String) throws {
        if let strength {
            guard strength.isFinite && strength > 0 && strength <= 1 else {
                throw ValidationError("--strength must be more than 0 and at most 1, not \(strength)")
            }
        }
        var progress = ProgressReporter(quiet: options.quiet)
        // Sizes that are not multiples of 8 are rendered on a canvas padded to the next ones
        // (the padding kept, like the unmasked input) and cut back.
        let (width, height) = (picture.width, picture.height)
        let (paddedWidth, paddedHeight) = ((width + 7) / 8 * 8, (height + 7) / 8 * 8)
        var settings = try options.settings(width: paddedWidth, height: paddedHeight, circular: circular, preset: preset)
        let outputs = try options.batchOutputs(seed: settings.seed, defaultBase: outputBase)
        let pipeline = try options.loadPipeline(modelURL, settings: &settings, prompts: [settings.prompt, settings.negativePrompt],
                                                encoding: true, progress: progress)
        let canvas = picture.padded(width: paddedWidth, height: paddedHeight)
        let paintMask = Mask.blurred(mask, radius: maskBlur).paddedWithZeros(height: paddedHeight, width: paddedWidth)
        let strength = self.strength ?? (pipeline.model.isInpainting ? 1 : defaultStrength)
        progress.note("\(width)x\(height): encoding the picture\(pipeline.model.isInpainting ? " and the masked picture (inpainting model)" : "")")
        try options.forEachPicture(settings, outputs: outputs, progress: &progress) { settings, outputURL, progress in
            var loop = try pipeline.inpaintingLoop(settings, image: canvas.tensor(), mask: paintMask, strength: strength)
            progress.note("\(settings.spotDiffusion ? "about " : "")\(loop.views.count) windows x \(loop.stepCount) of \(settings.steps) steps"
                          + (strength < 1 ? " (strength \(strength))" : ""))
            let parameters = try options.parameters(settings, model: pipeline.model,
                                                    extra: [Infotext.Field("Denoising strength", String(strength))] + extra)
            let result = try options.finish(&loop, pipeline: pipeline, settings: settings, progress: &progress, output: outputURL,
                                            parameters: parameters, inputs: [canvas.tensor(), paintMask, overlay], composite: { generated in
                Mask.composite(generated: generated.cropped(width: width, height: height), original: picture, mask: overlay)
            })
            return (result, parameters)
        }
    }

    /// The first 10 hex digits of a file's SHA-256, as A1111 shortens hashes.
    static func shortHash(_ url: URL) throws -> String {
        String(try FileHash.sha256(of: url, cache: nil).prefix(10))
    }

    /// `value` without a trailing ".0".
    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

extension Tensor {
    /// A [1, 1, h, w] mask grown to `height` x `width` with zeros (known) below and to the right.
    fileprivate func paddedWithZeros(height: Int, width: Int) -> Tensor {
        let (h, w) = (shape[2], shape[3])
        guard h != height || w != width else { return self }
        var data = [Float](repeating: 0, count: height * width)
        for y in 0..<h { for x in 0..<w { data[y * width + x] = self.data[y * w + x] } }
        return Tensor(shape: [1, 1, height, width], data: data)
    }
}
