import Tensors
import Weights

/// A view of a component's weights under a key prefix, so each layer loads its tensors by
/// their local names ("conv1.weight") while errors still report the full key.
struct Parameters: Sendable {
    let weights: WeightSet
    let prefix: String

    init(_ weights: WeightSet, prefix: String = "") {
        self.weights = weights
        self.prefix = prefix
    }

    /// The parameters below `name` ("down_blocks.0" → "down_blocks.0.").
    func scope(_ name: String) -> Parameters {
        Parameters(weights, prefix: prefix + name + ".")
    }

    func scope(_ name: String, _ index: Int) -> Parameters { scope("\(name).\(index)") }

    /// The tensor `name`, which must have exactly `shape`.
    func tensor(_ name: String, _ shape: [Int]) throws -> Tensor {
        try weights.tensor(prefix + name, shape: shape)
    }

    func contains(_ name: String) -> Bool { weights.contains(prefix + name) }

    func shape(of name: String) -> [Int]? { weights.shape(of: prefix + name) }
}
