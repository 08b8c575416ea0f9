import Foundation
import Tensors

/// The weights of one model component, spread over one or more safetensors files (shards), looked
/// up by name with the shape the configuration implies.
///
/// A view may hide a key prefix: `strippingPrefix("text_model.")` answers `tensor("embeddings…")`
/// from the stored `text_model.embeddings…`, so model code can use one naming for checkpoints saved
/// with and without the prefix.
public struct WeightSet: Sendable {
    /// Names this set in error messages (the component, e.g. "unet", or the file name).
    public let label: String
    public let files: [SafeTensorsFile]
    /// Prepended to every requested name to form the stored name.
    public let prefix: String
    /// Stored name → index into `files`.
    private let location: [String: Int]

    /// A set over `files`, whose tensor names must not repeat across files.
    public init(files: [SafeTensorsFile], label: String? = nil) throws {
        var location: [String: Int] = [:]
        for (i, file) in files.enumerated() {
            for name in file.names {
                if let other = location[name] {
                    throw WeightsError.corruptTensor(path: file.url.path, tensor: name, problem:
                        "is also stored in \(files[other].url.path); the weight files overlap, keep only one copy")
                }
                location[name] = i
            }
        }
        self.label = label ?? files.first?.url.lastPathComponent ?? "weights"
        self.files = files
        self.prefix = ""
        self.location = location
    }

    /// A set over the single safetensors file at `url`.
    public init(url: URL, label: String? = nil) throws {
        try self.init(files: [SafeTensorsFile(url: url)], label: label)
    }

    private init(label: String, files: [SafeTensorsFile], prefix: String, location: [String: Int]) {
        self.label = label
        self.files = files
        self.prefix = prefix
        self.location = location
    }

    /// Visible tensor names (without the view's prefix), sorted.
    public var names: [String] {
        location.keys.compactMap { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : nil }.sorted()
    }

    /// Whether the set has a tensor named `name` (after the view's prefix is applied).
    public func contains(_ name: String) -> Bool { location[prefix + name] != nil }

    /// Storage details of `name`, or nil if absent.
    public func info(_ name: String) -> TensorInfo? {
        let stored = prefix + name
        return location[stored].flatMap { files[$0].info(stored) }
    }

    /// The stored shape of `name`, or nil if absent (for models that adapt to the weights).
    public func shape(of name: String) -> [Int]? { info(name)?.shape }

    /// The tensor `name` as float32, checked against the shape the configuration expects.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let (file, info) = try locate(name)
        guard info.shape == shape else {
            throw WeightsError.shapeMismatch(set: label, tensor: info.name, file: file.url.path,
                                             stored: info.shape, expected: shape)
        }
        return try file.tensor(info.name)
    }

    /// The tensor `name` as float32 in its stored shape.
    public func tensor(_ name: String) throws -> Tensor {
        let (file, info) = try locate(name)
        return try file.tensor(info.name)
    }

    /// Like `tensor(_:shape:)`, but nil when absent (optional weights such as a bias or `position_ids`);
    /// a present tensor of the wrong shape is still an error.
    public func tensorIfPresent(_ name: String, shape: [Int]) throws -> Tensor? {
        contains(name) ? try tensor(name, shape: shape) : nil
    }

    /// The integer tensor `name` (I64/I32/…) as `Int`s.
    public func integers(_ name: String) throws -> [Int] {
        let (file, info) = try locate(name)
        return try file.integers(info.name)
    }

    /// A view in which `x` means the stored `p + x`; names without the prefix become invisible.
    public func strippingPrefix(_ p: String) -> WeightSet {
        WeightSet(label: label, files: files, prefix: prefix + p, location: location)
    }

    /// `strippingPrefix(p)` if any stored key (under this view) starts with `p`, else this set.
    /// For checkpoints that exist both with and without a prefix (e.g. `text_model.` in SD's text
    /// encoders, absent in transformers 5 saves).
    public func normalizingPrefix(_ p: String) -> WeightSet {
        location.keys.contains { $0.hasPrefix(prefix + p) } ? strippingPrefix(p) : self
    }

    private func locate(_ name: String) throws -> (SafeTensorsFile, TensorInfo) {
        let stored = prefix + name
        guard let i = location[stored], let info = files[i].info(stored) else {
            throw WeightsError.missingTensor(set: label, tensor: stored, files: files.map(\.url.path),
                                             hint: hint(forMissing: stored))
        }
        return (files[i], info)
    }

    /// A suggestion when the name exists under a different prefix (the usual cause of a miss).
    private func hint(forMissing stored: String) -> String? {
        if !prefix.isEmpty, location[String(stored.dropFirst(prefix.count))] != nil {
            return "the files store it without the prefix \"\(prefix)\""
        }
        if let match = location.keys.filter({ $0.hasSuffix("." + stored) }).min() {
            return "the files have \"\(match)\"; the keys carry a prefix this model does not expect"
        }
        if location.isEmpty { return "the weight files hold no tensors" }
        return nil
    }
}
