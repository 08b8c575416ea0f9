import Foundation

/// A contact sheet: pictures of one size in a grid, as a batch's overview.
extension RGBImage {
    /// `pictures` (all the first one's size) left to right, top to bottom, with the number of
    /// columns that makes the sheet closest to square (wide panoramas stack, square pictures tile);
    /// empty cells are black.
    public static func contactSheet(_ pictures: [RGBImage]) -> RGBImage {
        guard let first = pictures.first else { return RGBImage(width: 0, height: 0, pixels: []) }
        let (w, h, n) = (first.width, first.height, pictures.count)
        func squareness(_ columns: Int) -> Double {
            let rows = (n + columns - 1) / columns
            return abs(log(Double(columns * w) / Double(rows * h)))
        }
        let columns = (1...n).min { squareness($0) < squareness($1) } ?? 1
        let rows = (n + columns - 1) / columns
        let sheetWidth = columns * w
        var pixels = [UInt8](repeating: 0, count: sheetWidth * rows * h * 3)
        for (k, picture) in pictures.enumerated() where picture.width == w && picture.height == h {
            let (x0, y0) = (k % columns * w, k / columns * h)
            for y in 0..<h {
                let source = y * w * 3, target = ((y0 + y) * sheetWidth + x0) * 3
                pixels.replaceSubrange(target..<target + w * 3, with: picture.pixels[source..<source + w * 3])
            }
        }
        return RGBImage(width: sheetWidth, height: rows * h, pixels: pixels)
    }
}
