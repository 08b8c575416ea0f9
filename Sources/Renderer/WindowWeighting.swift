import Foundation

/// How much each latent pixel of a window counts when the fuser averages overlapping windows.
public enum WindowWeighting: Sendable, Equatable {
    /// Every pixel of every window counts once: MultiDiffusion's plain average, as diffusers'
    /// panorama pipeline does it.
    case uniform
    /// A Gaussian centred on the window, with standard deviation `sigma` times the window side
    /// (Mixture of Diffusers uses 0.1). A window's influence fades towards its edges, so no
    /// window border coincides with a jump in how the average is made up.
    case gaussian(sigma: Float)

    /// The default Gaussian width.
    public static let gaussian = WindowWeighting.gaussian(sigma: 0.1)

    /// Per-pixel weights of a `height` x `width` window, row-major (nil for uniform).
    public func weights(height: Int, width: Int) -> [Float]? {
        guard case .gaussian(let sigma) = self else { return nil }
        func axis(_ n: Int) -> [Float] {
            let centre = Float(n - 1) / 2, s = sigma * Float(n)
            return (0..<n).map { i in
                let d = (Float(i) - centre) / s
                return Foundation.exp(-0.5 * d * d)
            }
        }
        let (wy, wx) = (axis(height), axis(width))
        return wy.flatMap { y in wx.map { y * $0 } }
    }

    /// The name used on the command line, in presets and in PNG parameters (`init(name:)` reads it).
    public var name: String {
        switch self {
        case .uniform: "uniform"
        case .gaussian(let sigma): sigma == 0.1 ? "gaussian" : "gaussian:\(sigma)"
        }
    }

    /// Weights for each view, computed once per distinct window size (the arrays are shared).
    public func weights(for views: [LatentView]) -> [[Float]?] {
        guard self != .uniform else { return views.map { _ in nil } }
        var bySize: [[Int]: [Float]] = [:]
        return views.map { view in
            let key = [view.height, view.width]
            if let known = bySize[key] { return known }
            let w = weights(height: view.height, width: view.width)!
            bySize[key] = w
            return w
        }
    }

    /// Parses `uniform`, `gaussian` or `gaussian:SIGMA`.
    public init?(name: String) {
        if name == "uniform" { self = .uniform; return }
        if name == "gaussian" { self = .gaussian; return }
        guard name.hasPrefix("gaussian:"), let sigma = Float(name.dropFirst("gaussian:".count)),
              sigma > 0, sigma.isFinite else { return nil }
        self = .gaussian(sigma: sigma)
    }
}
