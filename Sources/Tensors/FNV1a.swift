/// 64-bit FNV-1a: a cheap, stable fingerprint for cache keys and identity checks (not for
/// security: a collision is only a wrong cache entry or a missed difference).
public struct FNV1a: Sendable {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    public init() {}

    public mutating func add(_ word: UInt64) {
        value = (value ^ word) &* 0x100_0000_01B3
    }

    /// The value in hex.
    public var hex: String { String(value, radix: 16) }
}
