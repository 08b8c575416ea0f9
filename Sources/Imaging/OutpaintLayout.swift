import Tensors

/// A picture and canvas that do not make an outpainting; the message says what would.
public struct OutpaintError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Where an input picture sits on a larger canvas to be outpainted, and what that makes known.
///
/// The input is scaled to the canvas height (unless kept at its size) and placed by an anchor;
/// everything else is generated. With `overlap` the known rectangle shrinks by that many pixels
/// on every side that meets generated area, so the model repaints a thin band of the input's
/// border and the two can join softly.
public struct OutpaintLayout: Sendable, Equatable {
    /// Where the input goes on the canvas.
    public enum Anchor: Sendable, Equatable, CustomStringConvertible {
        /// Vertically centred, against the left edge, in the middle or against the right edge.
        case left, center, right
        /// Top-left corner at (x, y) canvas pixels.
        case point(x: Int, y: Int)

        /// "left", "center", "right" or "X,Y".
        public init?(_ text: String) {
            switch text.lowercased() {
            case "left": self = .left
            case "center", "centre": self = .center
            case "right": self = .right
            default:
                let parts = text.split(separator: ",", omittingEmptySubsequences: false)
                guard parts.count == 2, let x = Int(parts[0].trimmingCharacters(in: .whitespaces)),
                      let y = Int(parts[1].trimmingCharacters(in: .whitespaces)) else { return nil }
                self = .point(x: x, y: y)
            }
        }

        public var description: String {
            switch self {
            case .left: return "left"
            case .center: return "center"
            case .right: return "right"
            case .point(let x, let y): return "\(x),\(y)"
            }
        }
    }

    public let canvasWidth: Int, canvasHeight: Int
    /// The input's rectangle on the canvas, after scaling.
    public let x: Int, y: Int, width: Int, height: Int
    /// 360°: the canvas's left and right edges meet, so the input's sides always border generated area.
    public let circular: Bool

    /// Places an input of `inputWidth` x `inputHeight` on the canvas. Throws when the input (scaled
    /// to the canvas height unless `keepSize`) does not fit or leaves nothing to generate.
    /// `.center` rounds the left edge down to a multiple of 8 pixels, so the border falls between
    /// latent pixels.
    public init(inputWidth: Int, inputHeight: Int, canvasWidth: Int, canvasHeight: Int, anchor: Anchor = .center,
                keepSize: Bool = false, circular: Bool = false) throws {
        guard inputWidth > 0, inputHeight > 0 else { throw OutpaintError("the input picture is empty") }
        self.canvasWidth = canvasWidth
        self.canvasHeight = canvasHeight
        self.circular = circular
        if keepSize {
            (width, height) = (inputWidth, inputHeight)
        } else {
            height = canvasHeight
            width = max(1, Int((Double(inputWidth) * Double(canvasHeight) / Double(inputHeight)).rounded()))
        }
        let how = keepSize ? "" : " scaled to the canvas height"
        guard width <= canvasWidth && height <= canvasHeight else {
            throw OutpaintError("the input is \(width)x\(height)\(how), larger than the \(canvasWidth)x\(canvasHeight) canvas; "
                + (keepSize ? "make the canvas larger or drop --keep-size" : "make the canvas wider or use --keep-size with a smaller picture"))
        }
        switch anchor {
        case .left: (x, y) = (0, (canvasHeight - height) / 2)
        case .center: (x, y) = ((canvasWidth - width) / 2 / 8 * 8, (canvasHeight - height) / 2)
        case .right: (x, y) = (canvasWidth - width, (canvasHeight - height) / 2)
        case .point(let px, let py):
            guard px >= 0, py >= 0, px + width <= canvasWidth, py + height <= canvasHeight else {
                throw OutpaintError("the input (\(width)x\(height)\(how)) at \(px),\(py) does not fit on the "
                    + "\(canvasWidth)x\(canvasHeight) canvas; x can be 0-\(canvasWidth - width) and y 0-\(canvasHeight - height)")
            }
            (x, y) = (px, py)
        }
        guard width < canvasWidth || height < canvasHeight else {
            throw OutpaintError("the input (\(width)x\(height)\(how)) already fills the canvas: nothing to outpaint; make the canvas larger")
        }
    }

    /// The canvas picture: the scaled input in its rectangle, the rest filled by stretching the
    /// input's outermost pixels outwards (what img2img-style starts and the 4-channel mode's
    /// masked pixels see; at strength 1 the generated area does not depend on it).
    public func canvasImage(_ input: RGBImage) -> RGBImage {
        let placed = input.width == width && input.height == height ? input : input.resized(width: width, height: height)
        var pixels = [UInt8](repeating: 0, count: canvasWidth * canvasHeight * 3)
        for cy in 0..<canvasHeight {
            let sy = min(max(cy - y, 0), height - 1)
            for cx in 0..<canvasWidth {
                let sx = min(max(cx - x, 0), width - 1)
                let s = (sy * width + sx) * 3, d = (cy * canvasWidth + cx) * 3
                pixels[d] = placed.pixels[s]
                pixels[d + 1] = placed.pixels[s + 1]
                pixels[d + 2] = placed.pixels[s + 2]
            }
        }
        return RGBImage(width: canvasWidth, height: canvasHeight, pixels: pixels)
    }

    /// The known rectangle after `overlap`: the input's, shrunk by `overlap` pixels on each side
    /// that borders generated area. A side on the canvas edge borders nothing, except the left
    /// and right sides on a 360° canvas, which the wrap joins to the generated area.
    public func knownRectangle(overlap: Int) -> (x: Int, y: Int, width: Int, height: Int) {
        let o = max(0, overlap)
        let fillsWidth = width == canvasWidth
        let left = (x > 0 || (circular && !fillsWidth)) ? o : 0
        let right = (x + width < canvasWidth || (circular && !fillsWidth)) ? o : 0
        let top = y > 0 ? o : 0, bottom = y + height < canvasHeight ? o : 0
        return (x + left, y + top, max(0, width - left - right), max(0, height - top - bottom))
    }

    /// The mask that blends the decoded canvas over the input picture, [1, 1, H, W] (1: the
    /// decoded canvas): the generated area and the repainted band, fading into the input over a
    /// further band of about 5·`blur` pixels inside it (a Gaussian of `blur` pixels across the
    /// edge of the input shrunk by ⌈2.5·blur⌉), so the join shows neither the paste nor the VAE's
    /// round trip, and the input beyond stays exact. `blur` 0: the input pasted as it is.
    public func overlayMask(overlap: Int = 0, blur: Double) -> Tensor {
        let band = blur > 0 ? Int((2.5 * blur).rounded(.up)) : 0
        let sharp = Tensor(shape: [1, 1, canvasHeight, canvasWidth], data: mask(overlap: overlap + band))
        return Mask.blurred(sharp, radius: blur)
    }

    /// The mask to generate with, [canvasHeight · canvasWidth] row-major: 1 where the model
    /// paints, 0 where the input is kept.
    public func mask(overlap: Int = 0) -> [Float] {
        let k = knownRectangle(overlap: overlap)
        var mask = [Float](repeating: 1, count: canvasWidth * canvasHeight)
        for row in k.y..<(k.y + k.height) {
            for column in k.x..<(k.x + k.width) { mask[row * canvasWidth + column] = 0 }
        }
        return mask
    }
}
