/// A configuration value that diffusers accepts either once for all blocks (`8`) or per block
/// (`[5, 10, 20, 20]`), e.g. `attention_head_dim` or `layers_per_block`.
public enum OneOrMany<Element: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    case one(Element)
    case many([Element])

    /// The value for each of `count` blocks: a single value is repeated, a list is returned as is
    /// (callers check its length against the block count, as diffusers does).
    public func expanded(to count: Int) -> [Element] {
        switch self {
        case let .one(value): return Array(repeating: value, count: count)
        case let .many(values): return values
        }
    }

    /// The single value, or the list's first element (nil for an empty list).
    public var first: Element? {
        switch self {
        case let .one(value): return value
        case let .many(values): return values.first
        }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let list = try? container.decode([Element].self) {
            self = .many(list)
        } else {
            // Decoding the single value last makes a mismatch report the scalar type, the common case.
            self = .one(try container.decode(Element.self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .one(value): try container.encode(value)
        case let .many(values): try container.encode(values)
        }
    }
}

extension OneOrMany: ExpressibleByIntegerLiteral where Element == Int {
    public init(integerLiteral value: Int) { self = .one(value) }
}

extension OneOrMany: ExpressibleByBooleanLiteral where Element == Bool {
    public init(booleanLiteral value: Bool) { self = .one(value) }
}

extension OneOrMany: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: Element...) { self = .many(elements) }
}
