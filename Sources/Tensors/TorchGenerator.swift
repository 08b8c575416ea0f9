import Foundation

/// A random source that reproduces PyTorch's CPU generator, so a seed gives the same latents here
/// as `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` gives in diffusers.
///
/// PyTorch's CPU generator is MT19937 seeded with the low 32 bits of the seed. `randn` of a float32
/// tensor with at least 16 elements draws one 24-bit uniform per element, then applies Box–Muller
/// to each block of 16: element j and j + 8 take radius √(−2 ln(1 − u[j])) and angle 2π u[j+8]
/// (cosine for j, sine for j + 8). When the count is not a multiple of 16 the last 16 elements
/// are recomputed from 16 fresh uniforms. Smaller tensors use double-precision Box–Muller with
/// 53-bit uniforms and a cached second value.
///
/// torch's AVX2 kernel evaluates log/sin/cos with Cephes polynomials rather than libm, so values
/// here can differ from it in the last bits (≤ 2e-6; see Tests/Fixtures/golden/README.md).
public struct TorchGenerator: Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624
    private var cachedNormal: Double?

    public init(seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
    }

    /// The generator's whole position, to save and restore it (a resumable render's checkpoint):
    /// the 624 MT19937 words, the index of the next one and the cached second normal, if any.
    public struct Position: Sendable, Equatable, Codable {
        public var words: [UInt32]
        public var index: Int
        /// The bit pattern of the cached normal (exact through any text format).
        public var cachedNormalBits: UInt64?

        public init(words: [UInt32], index: Int, cachedNormalBits: UInt64?) {
            (self.words, self.index, self.cachedNormalBits) = (words, index, cachedNormalBits)
        }
    }

    public var position: Position { Position(words: state, index: index, cachedNormalBits: cachedNormal?.bitPattern) }

    /// The generator at `position`; nil when it is not one (624 words, index 0...624).
    public init?(position: Position) {
        guard position.words.count == 624, position.index >= 0, position.index <= 624 else { return nil }
        state = position.words
        index = position.index
        cachedNormal = position.cachedNormalBits.map(Double.init(bitPattern:))
    }

    /// The next 32-bit MT19937 output.
    public mutating func nextUInt32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var next = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { next ^= 0x9908_B0DF }
            state[i] = next
        }
        index = 0
    }

    /// A float uniform in [0, 1) from 24 random bits, as `torch.rand` makes for float32.
    public mutating func nextUniformFloat() -> Float {
        Float(nextUInt32() & 0xFF_FFFF) / Float(1 << 24)
    }

    /// A double uniform in [0, 1) from 53 random bits.
    private mutating func nextUniformDouble() -> Double {
        let hi = UInt64(nextUInt32()), lo = UInt64(nextUInt32())
        let bits = (hi << 32 | lo) & ((1 << 53) - 1)
        return Double(bits) / Double(UInt64(1) << 53)
    }

    /// `torch.rand(shape)` in float32.
    public mutating func rand(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in nextUniformFloat() })
    }

    /// `torch.randn(shape)` in float32.
    public mutating func randn(_ shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        var data = [Float](repeating: 0, count: n)
        if n >= 16 {
            for i in 0..<n { data[i] = nextUniformFloat() }
            var i = 0
            while i + 16 <= n {
                Self.boxMuller16(&data, at: i)
                i += 16
            }
            if n % 16 != 0 {
                let start = n - 16
                for j in 0..<16 { data[start + j] = nextUniformFloat() }
                Self.boxMuller16(&data, at: start)
            }
        } else {
            for i in 0..<n { data[i] = Float(nextNormalDouble()) }
        }
        return Tensor(shape: shape, data: data)
    }

    private static func boxMuller16(_ data: inout [Float], at start: Int) {
        for j in 0..<8 {
            let u1 = 1 - data[start + j]
            let u2 = data[start + j + 8]
            let radius = (-2 * logf(u1)).squareRoot()
            let theta = 2 * Float.pi * u2
            data[start + j] = radius * cosf(theta)
            data[start + j + 8] = radius * sinf(theta)
        }
    }

    private mutating func nextNormalDouble() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = nextUniformDouble(), u2 = nextUniformDouble()
        let radius = (-2 * log1p(-u2)).squareRoot()
        let theta = 2 * Double.pi * u1
        cachedNormal = radius * sin(theta)
        return radius * cos(theta)
    }
}
