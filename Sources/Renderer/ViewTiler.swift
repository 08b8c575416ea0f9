/// One window of the latent canvas, in latent pixels. In 360° mode a view may run past the right
/// edge; its columns then wrap to the start of the canvas.
public struct LatentView: Hashable, Sendable, CustomStringConvertible {
    public let row: Int
    public let column: Int
    public let height: Int
    public let width: Int

    public init(row: Int, column: Int, height: Int, width: Int) {
        self.row = row
        self.column = column
        self.height = height
        self.width = width
    }

    public var description: String { "[\(row)..<\(row + height), \(column)..<\(column + width)]" }
}

/// Lays overlapping square windows over a latent canvas.
///
/// The windows are diffusers' `get_views` (row-major, `stride` apart) whenever those cover the
/// canvas. Where diffusers would leave the last rows or columns uncovered (the canvas minus the
/// window is not a multiple of the stride), one more window is placed flush with the edge, so every
/// latent pixel is denoised. In 360° mode there are ⌊width / stride⌋ columns of windows, the last
/// ones wrapping around the right edge; rows never wrap.
public struct ViewTiler: Sendable, Equatable {
    public var window: Int
    public var stride: Int
    public var circular: Bool

    public init(window: Int, stride: Int, circular: Bool = false) {
        precondition(window > 0 && stride > 0, "ViewTiler: window and stride must be positive")
        self.window = window
        self.stride = stride
        self.circular = circular
    }

    /// The windows for a latent canvas of `height` x `width`; both must be at least the window.
    public func views(height: Int, width: Int) -> [LatentView] {
        precondition(height >= window && width >= window,
                     "ViewTiler: canvas \(height)x\(width) is smaller than the \(window) window")
        let rows = starts(extent: height)
        // ⌊width / stride⌋ wrapping columns, as diffusers; its windows overlap past the seam, so
        // they cover the canvas even when the stride does not divide the width. (diffusers uses a
        // single window when the width equals the window, which leaves the seam unblended; here
        // the windows wrap at every width.)
        let columns = circular ? (0..<(width / stride)).map { $0 * stride } : starts(extent: width)
        return rows.flatMap { r in columns.map { LatentView(row: r, column: $0, height: window, width: window) } }
    }

    /// SpotDiffusion's windows (Frolov et al. 2024): side by side without overlap, the grid moved
    /// by `shift` (row, column) latent pixels. In 360° mode the columns wrap around the edge (the
    /// last window overlaps the first when the window does not divide the width); otherwise, and
    /// for rows, windows cut by an edge are moved flush with it and overlap their neighbour there.
    public func shiftedViews(height: Int, width: Int, shift: (row: Int, column: Int)) -> [LatentView] {
        precondition(height >= window && width >= window,
                     "ViewTiler: canvas \(height)x\(width) is smaller than the \(window) window")
        let rows = clampedGrid(extent: height, offset: shift.row)
        let columns = circular
            ? (0..<((width + window - 1) / window)).map { (shift.column % window + $0 * window) % width }
            : clampedGrid(extent: width, offset: shift.column)
        return rows.flatMap { r in columns.map { LatentView(row: r, column: $0, height: window, width: window) } }
    }

    /// offset − window, offset, offset + window, … over the extent, each moved inside it, without repeats.
    private func clampedGrid(extent: Int, offset: Int) -> [Int] {
        var positions: [Int] = []
        var p = offset % window - window
        while p < extent {
            let q = Swift.min(Swift.max(p, 0), extent - window)
            if positions.last != q { positions.append(q) }
            p += window
        }
        return positions
    }

    /// 0, stride, 2·stride, … while the window fits, plus a final window flush with the end.
    private func starts(extent: Int) -> [Int] {
        var positions = Array(Swift.stride(from: 0, through: extent - window, by: stride))
        if positions.last! + window < extent { positions.append(extent - window) }
        return positions
    }
}
