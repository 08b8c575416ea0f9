/// Conversions between float32 and the 16-bit formats, written as branch-free bit manipulation so
/// that loops over millions of weights vectorise (a plain `Float(Float16)` may become a library call
/// per element when the compiler cannot assume F16C).
enum HalfPrecision {
    /// IEEE binary16 bits → float32, exact for every input (including subnormals, inf and NaN).
    @inline(__always)
    static func float(fromHalfBits h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let magnitude = UInt32(h & 0x7FFF)
        // Moving exponent+mantissa up by 13 bits reinterprets them as a float32 whose exponent is
        // biased by 15 instead of 127; multiplying by 2^112 fixes the bias. This is exact for
        // normals and, because float32 subnormals scale the same way, for half subnormals too.
        let scaled = Float(bitPattern: magnitude << 13) * 0x1p112
        // Exponent 31 (inf/NaN) must stay inf/NaN rather than become a large finite number.
        let special = Float(bitPattern: (magnitude << 13) | 0x7F80_0000)
        let value = magnitude >= 0x7C00 ? special : scaled
        return Float(bitPattern: value.bitPattern | sign)
    }

    /// float32 → IEEE binary16 bits, rounding to nearest even (as torch and numpy do); NaN stays a
    /// quiet NaN. Done by hand because `Float16` is unavailable on some hosts (Intel macOS).
    @inline(__always)
    static func halfBits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let magnitude = bits & 0x7FFF_FFFF
        if magnitude >= 0x7F80_0000 { return sign | (magnitude > 0x7F80_0000 ? 0x7E00 : 0x7C00) }
        // 65520 is halfway between the largest half (65504) and 2^16; ties go to even, i.e. to inf.
        if magnitude >= 0x477F_F000 { return sign | 0x7C00 }
        if magnitude < 0x3880_0000 {
            // Below 2^-14 the result is subnormal: its mantissa is value·2^24 rounded to an integer
            // (the scaling is exact; 1024 correctly becomes the smallest normal).
            let scaled = Float(bitPattern: magnitude) * 0x1p24
            return sign | UInt16(scaled.rounded(.toNearestOrEven))
        }
        // Normal: drop 13 mantissa bits with round-to-nearest-even (a carry may bump the exponent),
        // then rebias the exponent from 127 to 15.
        let rounded = magnitude &+ 0x0FFF &+ ((magnitude >> 13) & 1)
        return sign | UInt16(truncatingIfNeeded: (rounded >> 13) &- (112 << 10))
    }

    /// bfloat16 bits → float32: bfloat16 is the top half of a float32.
    @inline(__always)
    static func float(fromBFloat16Bits b: UInt16) -> Float {
        Float(bitPattern: UInt32(b) << 16)
    }

    /// float32 → bfloat16 bits, rounding to nearest even; NaN stays a quiet NaN (torch's behaviour).
    @inline(__always)
    static func bfloat16Bits(from value: Float) -> UInt16 {
        if value.isNaN { return 0x7FC0 }
        let bits = value.bitPattern
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }
}
