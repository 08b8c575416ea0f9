/// Unicode NFC exactly as `tokenizers` computes it (Rust crate unicode-normalization-alignments, Unicode 9.0 data;
/// tables in UnicodeNormalizationData.swift). Code points unknown to that data have class 0 and never decompose or
/// compose. Neither Foundation's `precomposedStringWithCanonicalMapping` (truncates astral starters: U+104D8 U+0308
/// → U+04DA on Linux) nor the standard library's NFC (does not reorder marks decomposed from U+0F73 after an
/// earlier mark) is exact enough, hence this implementation.
enum CanonicalComposition {
    private struct Tables: Sendable {
        var combiningClass: [UInt32: UInt8] = [:]
        var decomposition: [UInt32: (UInt32, UInt32?)] = [:]
        var composition: [UInt64: UInt32] = [:]
    }

    private static let tables: Tables = {
        var t = Tables()
        for item in canonicalCombiningClassData.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let parts = item.split(separator: ":")
            let bounds = parts[0].split(separator: "-").map { UInt32($0, radix: 16)! }
            let value = UInt8(parts[1])!
            for c in bounds[0]...bounds[bounds.count - 1] { t.combiningClass[c] = value }
        }
        for item in canonicalDecompositionData.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let composes = item.hasSuffix("+")
            let parts = item.dropLast(composes ? 1 : 0).split(separator: ":")
            let code = UInt32(parts[0], radix: 16)!
            let mapping = parts[1].split(separator: ",").map { UInt32($0, radix: 16)! }
            t.decomposition[code] = (mapping[0], mapping.count > 1 ? mapping[1] : nil)
            if composes { t.composition[UInt64(mapping[0]) << 32 | UInt64(mapping[1])] = code }
        }
        return t
    }()

    private static let hangulBase: UInt32 = 0xAC00, leadBase: UInt32 = 0x1100, vowelBase: UInt32 = 0x1161
    private static let trailBase: UInt32 = 0x11A7, vowelCount: UInt32 = 21, trailCount: UInt32 = 28
    private static let syllableCount: UInt32 = 11172

    @inline(__always) static func combiningClass(_ c: UInt32) -> UInt8 {
        c < 0x300 ? 0 : tables.combiningClass[c] ?? 0
    }

    private static func decompose(_ c: UInt32, into output: inout [UInt32]) {
        if c < 0xC0 { output.append(c); return }
        if c >= hangulBase && c < hangulBase + syllableCount {
            let s = c - hangulBase
            output.append(leadBase + s / (vowelCount * trailCount))
            output.append(vowelBase + (s % (vowelCount * trailCount)) / trailCount)
            if s % trailCount != 0 { output.append(trailBase + s % trailCount) }
            return
        }
        guard let (first, second) = tables.decomposition[c] else { output.append(c); return }
        decompose(first, into: &output)
        if let second { decompose(second, into: &output) }
    }

    private static func compose(_ a: UInt32, _ b: UInt32) -> UInt32? {
        if a >= leadBase && a < leadBase + 19 && b >= vowelBase && b < vowelBase + vowelCount {
            return hangulBase + ((a - leadBase) * vowelCount + (b - vowelBase)) * trailCount
        }
        if a >= hangulBase && a < hangulBase + syllableCount && (a - hangulBase) % trailCount == 0
            && b > trailBase && b < trailBase + trailCount {
            return a + (b - trailBase)
        }
        return tables.composition[UInt64(a) << 32 | UInt64(b)]
    }

    /// The NFC form of a sequence of scalar values.
    static func nfc<C: Collection>(_ input: C) -> [UInt32] where C.Element == UInt32 {
        // Canonical decomposition.
        var d: [UInt32] = []
        d.reserveCapacity(input.count + 8)
        for c in input { decompose(c, into: &d) }
        // Canonical ordering: stable sort of each run of non-starters by combining class.
        var i = 0
        while i < d.count {
            guard combiningClass(d[i]) != 0 else { i += 1; continue }
            var end = i + 1
            while end < d.count, combiningClass(d[end]) != 0 { end += 1 }
            if end - i > 1 {
                for j in (i + 1)..<end {  // insertion sort: stable, runs are short
                    let value = d[j], cc = combiningClass(value)
                    var k = j
                    while k > i, combiningClass(d[k - 1]) > cc { d[k] = d[k - 1]; k -= 1 }
                    d[k] = value
                }
            }
            i = end
        }
        // Canonical composition.
        var output: [UInt32] = []
        output.reserveCapacity(d.count)
        var starter = -1  // index in output of the last starter
        var lastClass = -1  // class of the last character kept since that starter, -1 if none
        for c in d {
            let cc = Int(combiningClass(c))
            if starter >= 0, lastClass == -1 || lastClass < cc, let composite = compose(output[starter], c) {
                output[starter] = composite
                continue
            }
            if cc == 0 {
                starter = output.count
                lastClass = -1
            } else {
                lastClass = cc
            }
            output.append(c)
        }
        return output
    }
}
