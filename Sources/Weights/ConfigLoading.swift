import Foundation

/// A configuration read from a diffusers or transformers JSON file (`config.json`,
/// `scheduler_config.json`). Keys are snake_case as in the files; unknown keys are ignored and
/// missing ones take the Python library's constructor defaults.
public protocol JSONConfiguration: Codable, Sendable {}

/// Cross-field checks run after decoding (lists whose length must match the block count, …).
protocol ConsistencyChecked {
    /// The first inconsistency found, as the key to blame and what is wrong with it.
    func inconsistency() -> (key: String, problem: String)?
}

extension JSONConfiguration {
    /// Reads and decodes the file at `url`. Errors name the file and, where known, the key.
    public static func load(from url: URL) throws -> Self {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            let reason = FileManager.default.fileExists(atPath: url.path) ? "\(error.localizedDescription)"
                : "no such file"
            throw WeightsError.unreadable(path: url.path, reason: reason)
        }
        return try decode(data, path: url.path)
    }

    /// Decodes JSON `data`; `path` is only used in error messages.
    public static func decode(_ data: Data, path: String = "<config>") throws -> Self {
        let value: Self
        do {
            value = try JSONDecoder().decode(Self.self, from: data)
        } catch let error as DecodingError {
            throw configError(error, path: path)
        }
        if let checked = value as? ConsistencyChecked, let (key, problem) = checked.inconsistency() {
            throw WeightsError.invalidConfig(path: path, key: key, problem: problem)
        }
        return value
    }
}

/// Turns a `DecodingError` into a message naming the file and the key path (e.g. `block_out_channels[1]`).
func configError(_ error: DecodingError, path: String) -> WeightsError {
    func keyPath(_ codingPath: [CodingKey]) -> String? {
        guard !codingPath.isEmpty else { return nil }
        var text = ""
        for key in codingPath {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
        }
        return text
    }
    func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        case is [Int].Type: return "a list of integers"
        case is [String].Type: return "a list of strings"
        case is [Double].Type: return "a list of numbers"
        default: return "\(type)"
        }
    }
    switch error {
    case let .typeMismatch(_, context) where context.codingPath.isEmpty:
        return .invalidConfig(path: path, key: nil,
                              problem: "is not a JSON object of settings (\(context.debugDescription))")
    case let .typeMismatch(type, context):
        return .invalidConfig(path: path, key: keyPath(context.codingPath),
                              problem: "has the wrong type: expected \(typeName(type)) (\(context.debugDescription))")
    case let .valueNotFound(type, context):
        return .invalidConfig(path: path, key: keyPath(context.codingPath),
                              problem: "is null but must be \(typeName(type))")
    case let .keyNotFound(key, context):
        return .invalidConfig(path: path, key: keyPath(context.codingPath + [key]), problem: "is missing")
    case let .dataCorrupted(context):
        if let key = keyPath(context.codingPath) {
            return .invalidConfig(path: path, key: key, problem: "has an invalid value (\(context.debugDescription))")
        }
        let underlying = (context.underlyingError as NSError?)?.localizedDescription ?? context.debugDescription
        return .invalidConfig(path: path, key: nil,
                              problem: "is not valid JSON (\(underlying)); re-download the model or fix the file")
    @unknown default:
        return .invalidConfig(path: path, key: nil, problem: "could not be decoded (\(error))")
    }
}

extension KeyedDecodingContainer {
    /// The value of `key`, or `fallback` when the key is absent or null.
    func value<T: Decodable>(_ key: Key, or fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback
    }

    /// For options where an explicit `null` means "none" but an absent key means the library default
    /// (e.g. `mid_block_type`, `norm_num_groups`).
    func nullable<T: Decodable>(_ key: Key, or fallback: T?) throws -> T? {
        guard contains(key) else { return fallback }
        if try decodeNil(forKey: key) { return nil }
        return try decode(T.self, forKey: key)
    }
}

/// Checks that a per-block list has one entry per down block.
func perBlockProblem<T>(_ key: String, _ value: OneOrMany<T>?, blocks: Int) -> (key: String, problem: String)? {
    guard case let .many(list)? = value, list.count != blocks else { return nil }
    return (key, "has \(list.count) entries but there are \(blocks) down blocks (down_block_types)")
}

/// The first size outside its range, as a config problem: sizes from a file are bounded before a
/// model is built from them (allocations, layer loops, divisions), with limits far above any
/// published model's.
func sizeProblem(_ checks: [(key: String, values: [Int], range: ClosedRange<Int>)]) -> (key: String, problem: String)? {
    for (key, values, range) in checks {
        if let bad = values.first(where: { !range.contains($0) }) {
            return (key, "is \(bad); it must be between \(range.lowerBound) and \(range.upperBound)")
        }
    }
    return nil
}

extension OneOrMany {
    /// Every value given (one, or the list's).
    var all: [Element] {
        switch self {
        case let .one(value): return [value]
        case let .many(values): return values
        }
    }
}
