/// A token matched literally in the prompt before BPE (`tokenizers`' added tokens: BOS, EOS, UNK, PAD and any
/// `added_tokens_decoder` entry). Non-normalized ones are found in the raw text, normalized ones in the
/// normalized (NFC, whitespace-collapsed, lowercased) text; both leftmost-longest.
struct AddedToken: Sendable, Equatable {
    var content: String
    var id: Int
    var normalized: Bool
}

/// Leftmost-longest literal matcher over a sequence of code units (bytes or scalar values).
struct LiteralMatcher: Sendable {
    private var patterns: [(units: [UInt32], id: Int)] = []
    private var firstUnits = Set<UInt32>()

    init(_ patterns: [(units: [UInt32], id: Int)]) {
        for p in patterns where !p.units.isEmpty && !self.patterns.contains(where: { $0.units == p.units }) {
            self.patterns.append(p)
            firstUnits.insert(p.units[0])
        }
    }

    var isEmpty: Bool { patterns.isEmpty }

    /// Splits `units` into literal matches (`.token`) and the text between them (`.text`, never empty).
    func split(_ units: [UInt32], _ body: (Segment) -> Void) {
        guard !patterns.isEmpty else {
            if !units.isEmpty { body(.text(units[...])) }
            return
        }
        var start = 0, i = 0
        while i < units.count {
            if firstUnits.contains(units[i]) {
                var best: (length: Int, id: Int)? = nil
                for p in patterns where p.units.count <= units.count - i && (best == nil || p.units.count > best!.length) {
                    if units[i..<(i + p.units.count)].elementsEqual(p.units) { best = (p.units.count, p.id) }
                }
                if let best {
                    if start < i { body(.text(units[start..<i])) }
                    body(.token(best.id))
                    i += best.length
                    start = i
                    continue
                }
            }
            i += 1
        }
        if start < units.count { body(.text(units[start...])) }
    }

    enum Segment {
        case text(ArraySlice<UInt32>)
        case token(Int)
    }
}

/// The normalizer and pre-tokenizer of transformers' `CLIPTokenizer` (backed by `tokenizers`):
///
/// - normalizer: `Sequence([NFC, Replace(/\s+/, " "), Lowercase])`, where NFC uses Unicode 9.0 data, `\s` is
///   Unicode White_Space and `Lowercase` maps each code point on its own (full mapping, e.g. "İ" → "i̇", no
///   final-sigma rule);
/// - pre-tokenizer: `Split(/<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
///   [^\s\p{L}\p{N}]+/, removed, invert)` (whitespace dropped, one word per digit), then `ByteLevel` whose
///   GPT-2 regex only further splits the special-token-like words into "<|", the letters and "|>".
///
/// Character classes follow Oniguruma's Unicode 16.0 tables: code points assigned later count as neither
/// letter nor number.
enum CLIPPreTokenizer {
    enum CharacterClass { case whitespace, letter, number, other }

    /// Unicode White_Space, which is what `\s` matches in `tokenizers`' regexes.
    @inline(__always) static func isWhitespace(_ v: UInt32) -> Bool {
        switch v {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
        default: return false
        }
    }

    static func characterClass(_ v: UInt32) -> CharacterClass {
        if v < 0x80 {
            switch v {
            case 0x61...0x7A, 0x41...0x5A: return .letter
            case 0x30...0x39: return .number
            case 0x09...0x0D, 0x20: return .whitespace
            default: return .other
            }
        }
        if isWhitespace(v) { return .whitespace }
        guard let scalar = Unicode.Scalar(v) else { return .other }
        let properties = scalar.properties
        guard let age = properties.age, age.major < 16 || (age.major == 16 && age.minor == 0) else { return .other }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// NFC, whitespace runs → one space, per-code-point lowercase. Input and output are scalar values.
    static func normalize(_ scalars: ArraySlice<UInt32>) -> [UInt32] {
        // Below U+0300 every text is NFC already.
        let source = scalars.contains(where: { $0 >= 0x300 }) ? ArraySlice(CanonicalComposition.nfc(scalars)) : scalars
        var output: [UInt32] = []
        output.reserveCapacity(source.count)
        var inWhitespace = false
        for v in source {
            if isWhitespace(v) {
                if !inWhitespace { output.append(0x20) }
                inWhitespace = true
                continue
            }
            inWhitespace = false
            if v < 0x80 {
                output.append(v >= 0x41 && v <= 0x5A ? v + 0x20 : v)
            } else {
                for u in Unicode.Scalar(v)!.properties.lowercaseMapping.unicodeScalars { output.append(u.value) }
            }
        }
        return output
    }

    private static let specialWords: [[UInt32]] = ["<|startoftext|>", "<|endoftext|>"].map { $0.unicodeScalars.map(\.value) }
    private static let apostrophe: UInt32 = 0x27

    /// Calls `body` with the UTF-8 bytes of each word of normalized text, in order.
    static func forEachWord(_ s: [UInt32], _ body: ([UInt8]) -> Void) {
        let n = s.count
        var i = 0
        func emit(_ range: Range<Int>) {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(range.count)
            for k in range { UTF8.encode(Unicode.Scalar(s[k])!) { bytes.append($0) } }
            body(bytes)
        }
        while i < n {
            let v = s[i]
            if v == 0x3C, let word = specialWords.first(where: { n - i >= $0.count && s[i..<(i + $0.count)].elementsEqual($0) }) {
                // One regex match, which ByteLevel's GPT-2 regex splits into "<|", letters, "|>".
                emit(i..<(i + 2))
                emit((i + 2)..<(i + word.count - 2))
                emit((i + word.count - 2)..<(i + word.count))
                i += word.count
                continue
            }
            if v == apostrophe, i + 1 < n {
                let c1 = s[i + 1], c2: UInt32 = i + 2 < n ? s[i + 2] : 0
                var length = 0
                switch c1 {
                case 0x73, 0x74, 0x6D, 0x64: length = 2  // 's 't 'm 'd
                case 0x72, 0x76: length = c2 == 0x65 ? 3 : 0  // 're 've
                case 0x6C: length = c2 == 0x6C ? 3 : 0  // 'll
                default: break
                }
                if length > 0 {
                    emit(i..<(i + length))
                    i += length
                    continue
                }
            }
            switch characterClass(v) {
            case .whitespace:
                i += 1
            case .number:
                emit(i..<(i + 1))
                i += 1
            case .letter:
                var j = i + 1
                while j < n, characterClass(s[j]) == .letter { j += 1 }
                emit(i..<j)
                i = j
            case .other:
                var j = i + 1
                while j < n, characterClass(s[j]) == .other { j += 1 }
                emit(i..<j)
                i = j
            }
        }
    }
}
