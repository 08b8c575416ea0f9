import Foundation

/// AUTOMATIC1111's emphasis syntax (`modules/prompt_parser.py`, `parse_prompt_attention`): a prompt
/// becomes runs of text, each with the weight its brackets give it.
///
/// - `(text)` multiplies by 1.1, `[text]` divides by 1.1, `(text:1.3)` multiplies by 1.3; brackets nest
///   and their factors multiply.
/// - `\(`, `\)`, `\[`, `\]` and `\\` are the literal characters; a lone `\` is dropped.
/// - A `)` or `]` with nothing open is literal text, as is a `:1.3)` with no `(` open; brackets still
///   open at the end apply to everything after them.
/// - `BREAK` (a whole word, upper case, with the whitespace around it) ends a chunk; it is returned as
///   the run `("BREAK", -1)`, A1111's marker. Like A1111, a BREAK inside brackets has its marker weight
///   multiplied, stops being a marker and is then read as the word "BREAK" with that (negative) weight.
/// - Adjacent runs of equal weight are merged; an empty prompt gives one empty run of weight 1.
///
/// Weights are computed in `Double` in A1111's order (inner factors first), so they equal its Python
/// floats bit for bit. Prompt editing (`[a:b:0.5]`), alternation (`[a|b]`) and `AND` are not parsed here
/// (A1111 resolves them before this step); their characters go through the rules above.
public enum PromptAttention {
    /// One run of text and its weight.
    public struct Run: Sendable, Equatable {
        public var text: String
        public var weight: Double

        public init(_ text: String, _ weight: Double) {
            self.text = text
            self.weight = weight
        }

        /// A1111's BREAK marker (text "BREAK", weight exactly -1).
        public var isBreak: Bool { text == "BREAK" && weight == -1 }
    }

    /// A prompt the parser refuses.
    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        /// A weight `(text:W)` whose W is not a number (A1111's float() raises too), at a character offset.
        case invalidWeight(String, offset: Int)
        /// A prompt longer than `maximumLength` (its length).
        case tooLong(Int)

        public var description: String {
            switch self {
            case let .invalidWeight(weight, offset):
                return "prompt emphasis: \"\(weight)\" at character \(offset) is not a number; write a weight as"
                    + " (text:1.2) or escape the brackets as \\( \\)"
            case let .tooLong(length):
                return "the prompt has \(length) characters, more than the \(PromptAttention.maximumLength) this program reads"
            }
        }
    }

    /// The longest prompt parsed, in Unicode scalars. Brackets cost time proportional to the runs they
    /// close over (as in A1111), so an unbounded prompt — say from a PNG's parameters — could take
    /// minutes; this bound keeps the worst case well under a second.
    public static let maximumLength = 32_768

    static let roundMultiplier = 1.1
    static let squareMultiplier = 1 / 1.1

    /// The weighted runs of `text` (see the type's documentation).
    public static func parse(_ text: String) throws -> [Run] {
        let s = Array(text.unicodeScalars)
        guard s.count <= maximumLength else { throw Error.tooLong(s.count) }
        var runs: [Run] = []
        var round: [Int] = [], square: [Int] = []
        func multiply(from start: Int, by factor: Double) {
            for p in start..<runs.count { runs[p].weight *= factor }
        }
        func string(_ range: Range<Int>) -> String {
            var out = String.UnicodeScalarView()
            out.append(contentsOf: s[range])
            return String(out)
        }

        var i = 0
        while i < s.count {
            let c = s[i]
            if c == "\\" {
                // `\(`, `\)`, `\[`, `\]`, `\\` keep the second character; a lone `\` keeps nothing.
                if i + 1 < s.count, "()[]\\".unicodeScalars.contains(s[i + 1]) {
                    runs.append(Run(string(i + 1..<i + 2), 1))
                    i += 2
                } else {
                    runs.append(Run("", 1))
                    i += 1
                }
            } else if c == "(" {
                round.append(runs.count)
                i += 1
            } else if c == "[" {
                square.append(runs.count)
                i += 1
            } else if c == ":" {
                // `:\s*([+-]?[.\d]+)\s*\)` closes a round bracket with an explicit weight; otherwise the
                // colon is plain text.
                if let (number, end) = weightSuffix(s, from: i), !round.isEmpty {
                    guard let weight = Double(number) else {
                        throw Error.invalidWeight(number, offset: i)
                    }
                    multiply(from: round.removeLast(), by: weight)
                    i = end
                } else if let (_, end) = weightSuffix(s, from: i) {
                    // A weight with no bracket open is kept as text, as A1111 keeps its match.
                    appendText(string(i..<end), to: &runs)
                    i = end
                } else {
                    runs.append(Run(":", 1))
                    i += 1
                }
            } else if c == ")" && !round.isEmpty {
                multiply(from: round.removeLast(), by: roundMultiplier)
                i += 1
            } else if c == "]" && !square.isEmpty {
                multiply(from: square.removeLast(), by: squareMultiplier)
                i += 1
            } else if c == ")" || c == "]" {
                appendText(string(i..<i + 1), to: &runs)
                i += 1
            } else {
                var end = i + 1
                while end < s.count, !"\\()[]:".unicodeScalars.contains(s[end]) { end += 1 }
                appendText(string(i..<end), to: &runs)
                i = end
            }
        }
        // Brackets left open apply to the rest, innermost-first as A1111 iterates its stacks.
        for start in round { multiply(from: start, by: roundMultiplier) }
        for start in square { multiply(from: start, by: squareMultiplier) }
        if runs.isEmpty { runs = [Run("", 1)] }

        var k = 0
        while k + 1 < runs.count {
            if runs[k].weight == runs[k + 1].weight {
                runs[k].text += runs[k + 1].text
                runs.remove(at: k + 1)
            } else {
                k += 1
            }
        }
        return runs
    }

    /// The number text and the end of a `:\s*([+-]?[.\d]+)\s*\)` match at `start` (a colon), if any.
    private static func weightSuffix(_ s: [Unicode.Scalar], from start: Int) -> (String, Int)? {
        var j = start + 1
        while j < s.count, isSpace(s[j]) { j += 1 }
        var number = ""
        if j < s.count, s[j] == "+" || s[j] == "-" {
            number.unicodeScalars.append(s[j])
            j += 1
        }
        var digits = 0
        while j < s.count, s[j] == "." || isDecimalDigit(s[j]) {
            // Python's \d and float() take any Unicode decimal digit; keep its ASCII value.
            if s[j] == "." {
                number += "."
            } else {
                number += String(Int(s[j].properties.numericValue ?? 0))
            }
            digits += 1
            j += 1
        }
        guard digits > 0 else { return nil }
        while j < s.count, isSpace(s[j]) { j += 1 }
        guard j < s.count, s[j] == ")" else { return nil }
        return (number, j + 1)
    }

    /// A text match: split at BREAK (`\s*\bBREAK\b\s*`), each BREAK becoming the marker run.
    private static func appendText(_ text: String, to runs: inout [Run]) {
        for (k, part) in splitAtBreak(text).enumerated() {
            if k > 0 { runs.append(Run("BREAK", -1)) }
            runs.append(Run(part, 1))
        }
    }

    /// `re.split(r"\s*\bBREAK\b\s*", text)`.
    static func splitAtBreak(_ text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        let word: [Unicode.Scalar] = ["B", "R", "E", "A", "K"]
        var parts: [String] = []
        var partStart = 0, search = 0
        func string(_ range: Range<Int>) -> String {
            var out = String.UnicodeScalarView()
            out.append(contentsOf: s[range])
            return String(out)
        }
        var q = 0
        while q + word.count <= s.count {
            let isMatch = s[q..<q + word.count].elementsEqual(word)
                && (q == 0 || !isWordCharacter(s[q - 1]))
                && (q + word.count == s.count || !isWordCharacter(s[q + word.count]))
            guard isMatch else {
                q += 1
                continue
            }
            // The match starts at the whitespace run before BREAK (not before the previous match's end).
            var start = q
            while start > search, isSpace(s[start - 1]) { start -= 1 }
            var end = q + word.count
            while end < s.count, isSpace(s[end]) { end += 1 }
            parts.append(string(partStart..<start))
            partStart = end
            search = end
            q = end
        }
        parts.append(string(partStart..<s.count))
        return parts
    }

    /// Python's `\s` for str: Unicode White_Space plus the information separators U+001C–U+001F.
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// Python's `\w` for str: letters, characters with a numeric value, and `_`.
    static func isWordCharacter(_ c: Unicode.Scalar) -> Bool {
        if c == "_" { return true }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return c.properties.numericType != nil
        }
    }

    static func isDecimalDigit(_ c: Unicode.Scalar) -> Bool {
        c.properties.numericType == .decimal
    }
}
