extension RGBImage {
    /// Luminance (Rec. 709 weights) of every pixel in [0, 1], row-major.
    public var luminance: [Double] {
        (0..<(width * height)).map { i -> Double in
            let r = Double(pixels[i * 3]), g = Double(pixels[i * 3 + 1]), b = Double(pixels[i * 3 + 2])
            return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
        }
    }

    /// Laplacian energy of the luminance: the mean over interior pixels of
    /// (4·Y(x, y) − Y(x±1, y) − Y(x, y±1))², a focus measure that falls as a picture blurs. Used to
    /// compare a few-step render with a many-step one of the same model.
    public var laplacianEnergy: Double {
        guard width >= 3 && height >= 3 else { return 0 }
        let y = luminance
        var total = 0.0
        for row in 1..<(height - 1) {
            for column in 1..<(width - 1) {
                let i = row * width + column
                let l = 4 * y[i] - y[i - 1] - y[i + 1] - y[i - width] - y[i + width]
                total += l * l
            }
        }
        return total / Double((width - 2) * (height - 2))
    }
}
