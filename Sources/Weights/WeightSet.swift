import Foundation
import Tensors

/// The weights of one model component, spread over one or more safetensors files (shards), looked
/// up by name with the shape the configuration implies.
///
/// A view may hide a key prefix: `strippingPrefix("text_model.")` answers `tensor("embeddings…")`
/// from the stored `text_model.embeddings…`, so model code can use one naming for checkpoints saved
/// with and without the prefix. A set may also rename: `WeightSet(file:renaming:)` answers diffusers'
/// names from a checkpoint stored under other names (`SingleFileCheckpoint`).
public struct WeightSet: Sendable {
    /// Where a renamed tensor is stored: a tensor of the file, or a band of rows of one (the query,
    /// key and value projections that some checkpoints keep fused in one matrix).
    public struct StoredTensor: Sendable, Equatable {
        public var name: String
        /// Rows (first dimension) of `name` that form the tensor; nil for all of it.
        public var rows: Range<Int>?

        public init(_ name: String, rows: Range<Int>? = nil) {
            self.name = name
            self.rows = rows
        }
    }

    /// Names this set in error messages (the component, e.g. "unet", or the file name).
    public let label: String
    public let files: [SafeTensorsFile]
    /// Prepended to every requested name to form the stored name.
    public let prefix: String
    /// Stored name → index into `files`.
    private let location: [String: Int]
    /// Visible name → where it is stored, for a renaming set (nil: names are stored names).
    private let renaming: [String: StoredTensor]?
    /// Visible name → low-rank changes added to the tensor as it is read (LoRAs merged at load).
    private var deltas: [String: [WeightDelta]] = [:]

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
        self.renaming = nil
    }

    /// A set that shows the tensors of `file` under other names: `renaming` maps each visible name
    /// to where it is stored. Stored tensors it does not name are invisible.
    public init(file: SafeTensorsFile, renaming: [String: StoredTensor], label: String) {
        self.label = label
        self.files = [file]
        self.prefix = ""
        self.location = Dictionary(uniqueKeysWithValues: file.names.map { ($0, 0) })
        self.renaming = renaming
    }

    /// A set over the single safetensors file at `url`.
    public init(url: URL, label: String? = nil) throws {
        try self.init(files: [SafeTensorsFile(url: url)], label: label)
    }

    private init(label: String, files: [SafeTensorsFile], prefix: String, location: [String: Int],
                 renaming: [String: StoredTensor]?, deltas: [String: [WeightDelta]]) {
        self.label = label
        self.files = files
        self.prefix = prefix
        self.location = location
        self.renaming = renaming
        self.deltas = deltas
    }

    /// This set with `changes` (visible name → deltas, without the view's prefix) added to the
    /// tensors they name whenever those are read: a LoRA merged into the weights before any layer
    /// packs or transforms them, so it costs nothing per step. Each delta must
    /// be the size of the tensor it changes (`WeightDelta.fits`), or this throws.
    public func adding(_ changes: [String: [WeightDelta]]) throws -> WeightSet {
        var set = self
        for (name, list) in changes {
            guard let shape = shape(of: name) else {
                throw WeightsError.missingTensor(set: label, tensor: prefix + name, files: files.map(\.url.path), hint: nil)
            }
            for delta in list where !delta.fits(shape) {
                throw WeightsError.shapeMismatch(set: label, tensor: prefix + name, file: files.first?.url.path ?? label,
                                                 stored: shape, expected: [delta.rows, delta.columns])
            }
            set.deltas[prefix + name, default: []] += list
        }
        return set
    }

    /// Visible names (without the view's prefix) that have deltas.
    public var changedNames: [String] {
        deltas.keys.compactMap { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : nil }.sorted()
    }

    /// Visible names before any prefix view.
    private var allNames: [String] { renaming.map { Array($0.keys) } ?? Array(location.keys) }

    /// Visible tensor names (without the view's prefix), sorted.
    public var names: [String] {
        allNames.compactMap { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : nil }.sorted()
    }

    /// Whether the set has a tensor named `name` (after the view's prefix is applied).
    public func contains(_ name: String) -> Bool { stored(prefix + name) != nil }

    /// Storage details of `name`, or nil if absent (for a band of rows: the whole stored matrix's).
    public func info(_ name: String) -> TensorInfo? { lookup(prefix + name)?.info }

    /// The shape of `name` as this set gives it, or nil if absent (for models that adapt to the weights).
    public func shape(of name: String) -> [Int]? {
        lookup(prefix + name).map { Self.shape($0.info, $0.rows) }
    }

    /// The tensor `name` as float32, checked against the shape the configuration expects.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let (file, info, rows) = try locate(name)
        let stored = Self.shape(info, rows)
        guard stored == shape else {
            throw WeightsError.shapeMismatch(set: label, tensor: describe(info.name, rows), file: file.url.path,
                                             stored: stored, expected: shape)
        }
        var t = try read(file, info, rows)
        addDeltas(of: prefix + name, to: &t)
        return t
    }

    /// The tensor `name` as float32 in its stored shape.
    public func tensor(_ name: String) throws -> Tensor {
        let (file, info, rows) = try locate(name)
        var t = try read(file, info, rows)
        addDeltas(of: prefix + name, to: &t)
        return t
    }

    /// Adds the deltas of the visible name `visible` to `tensor`, in place (the freshly read
    /// tensor is not shared, so no copy is made).
    private func addDeltas(of visible: String, to tensor: inout Tensor) {
        for delta in deltas[visible] ?? [] { delta.add(to: &tensor) }
    }

    /// Like `tensor(_:shape:)`, but nil when absent (optional weights such as a bias or `position_ids`);
    /// a present tensor of the wrong shape is still an error.
    public func tensorIfPresent(_ name: String, shape: [Int]) throws -> Tensor? {
        contains(name) ? try tensor(name, shape: shape) : nil
    }

    /// The integer tensor `name` (I64/I32/…) as `Int`s.
    public func integers(_ name: String) throws -> [Int] {
        let (file, info, rows) = try locate(name)
        guard rows == nil else {
            throw WeightsError.wrongDType(path: file.url.path, tensor: info.name, dtype: info.dtype.rawValue,
                                          expected: "an integer tensor stored whole")
        }
        return try file.integers(info.name)
    }

    /// A view in which `x` means `p + x`; names without the prefix become invisible.
    public func strippingPrefix(_ p: String) -> WeightSet {
        WeightSet(label: label, files: files, prefix: prefix + p, location: location, renaming: renaming, deltas: deltas)
    }

    /// `strippingPrefix(p)` if any stored key (under this view) starts with `p`, else this set.
    /// For checkpoints that exist both with and without a prefix (e.g. `text_model.` in SD's text
    /// encoders, absent in transformers 5 saves).
    public func normalizingPrefix(_ p: String) -> WeightSet {
        allNames.contains { $0.hasPrefix(prefix + p) } ? strippingPrefix(p) : self
    }

    /// Where the visible (prefixed) name `visible` is stored, or nil.
    private func stored(_ visible: String) -> StoredTensor? {
        if let renaming { return renaming[visible] }
        return location[visible] != nil ? StoredTensor(visible) : nil
    }

    /// The stored tensor behind the visible (prefixed) name, or nil.
    private func lookup(_ visible: String) -> (file: Int, info: TensorInfo, rows: Range<Int>?)? {
        guard let s = stored(visible), let i = location[s.name], let info = files[i].info(s.name) else { return nil }
        return (i, info, s.rows)
    }

    /// The shape of `rows` of the stored tensor `info` (all of it when nil).
    private static func shape(_ info: TensorInfo, _ rows: Range<Int>?) -> [Int] {
        rows.map { [$0.count] + info.shape.dropFirst() } ?? info.shape
    }

    private func locate(_ name: String) throws -> (SafeTensorsFile, TensorInfo, Range<Int>?) {
        let visible = prefix + name
        guard let (i, info, rows) = lookup(visible) else {
            throw WeightsError.missingTensor(set: label, tensor: visible, files: files.map(\.url.path),
                                             hint: hint(forMissing: visible))
        }
        if let rows, info.shape.isEmpty || rows.lowerBound < 0 || rows.upperBound > info.shape[0] {
            throw WeightsError.shapeMismatch(set: label, tensor: describe(info.name, rows), file: files[i].url.path,
                                             stored: info.shape, expected: Self.shape(info, rows))
        }
        return (files[i], info, rows)
    }

    private func read(_ file: SafeTensorsFile, _ info: TensorInfo, _ rows: Range<Int>?) throws -> Tensor {
        let whole = try file.tensor(info.name)
        guard let rows else { return whole }
        let width = info.shape.dropFirst().reduce(1, *)
        return Tensor(shape: Self.shape(info, rows),
                      data: Array(whole.data[rows.lowerBound * width ..< rows.upperBound * width]))
    }

    private func describe(_ name: String, _ rows: Range<Int>?) -> String {
        rows.map { "\(name) (rows \($0.lowerBound)..<\($0.upperBound))" } ?? name
    }

    /// A suggestion when the name exists under a different prefix (the usual cause of a miss).
    private func hint(forMissing stored: String) -> String? {
        if !prefix.isEmpty, self.stored(String(stored.dropFirst(prefix.count))) != nil {
            return "the files store it without the prefix \"\(prefix)\""
        }
        if let match = allNames.filter({ $0.hasSuffix("." + stored) }).min() {
            return "the files have \"\(match)\"; the keys carry a prefix this model does not expect"
        }
        if location.isEmpty { return "the weight files hold no tensors" }
        return nil
    }
}
