import Tensors
import Weights

/// A view of a component's weights under a key prefix, so each layer loads its tensors by
/// their local names ("conv1.weight") while errors still report the full key.
struct Parameters: Sendable {
    let weights: WeightSet
    let prefix: String
    /// Convolutions built from these parameters keep float32 weights at bf16 too, and run 3x3
    /// ones through float32 Winograd where it applies (the VAE: see `Conv2D`).
    var float32Convolutions = false

    init(_ weights: WeightSet, prefix: String = "", float32Convolutions: Bool = false) {
        self.weights = weights
        self.prefix = prefix
        self.float32Convolutions = float32Convolutions
    }

    /// The parameters below `name` ("down_blocks.0" → "down_blocks.0.").
    func scope(_ name: String) -> Parameters {
        Parameters(weights, prefix: prefix + name + ".", float32Convolutions: float32Convolutions)
    }

    func scope(_ name: String, _ index: Int) -> Parameters { scope("\(name).\(index)") }

    /// The tensor `name`, which must have exactly `shape`.
    func tensor(_ name: String, _ shape: [Int]) throws -> Tensor {
        try weights.tensor(prefix + name, shape: shape)
    }

    func contains(_ name: String) -> Bool { weights.contains(prefix + name) }

    func shape(of name: String) -> [Int]? { weights.shape(of: prefix + name) }
}
