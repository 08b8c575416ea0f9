import Foundation
import Schedulers
import Weights

/// AUTOMATIC1111's "infotext": the `parameters` text its PNGs carry, which ComfyUI, Forge and image
/// browsers read too. Three parts:
///
/// ```
/// a prompt, possibly on several lines
/// Negative prompt: what to avoid, possibly on several lines
/// Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1, Size: 2048x512, …
/// ```
///
/// The last line holds `key: value` fields in order; a value containing `,`, `:` or a newline is
/// written as a JSON string (A1111's `quote`). Reading follows A1111's `parse_generation_parameters`:
/// lines are trimmed, a line starting `Negative prompt:` starts the negative prompt (which runs to
/// the parameters line), and the last line counts as parameters only when A1111's field pattern
/// finds at least 3 fields in it; otherwise it belongs to the prompt. Empty values are dropped, as
/// A1111's parser drops them.
public struct Infotext: Sendable, Equatable {
    /// One `key: value` field of the parameters line (the value unquoted).
    public struct Field: Sendable, Equatable {
        /// The field's name, e.g. "CFG scale".
        public var key: String
        /// The value as A1111 means it (unquoted; `quote` is applied when the text is written).
        public var value: String

        /// The field `key: value`.
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    /// The prompt as typed (A1111 syntax, `<lora:…>` tags and all); may span lines.
    public var prompt: String
    /// The negative prompt; empty when there is none (no `Negative prompt:` line is written).
    public var negativePrompt: String
    /// The parameters line's fields, in order.
    public var fields: [Field]

    /// An infotext of these parts.
    public init(prompt: String, negativePrompt: String = "", fields: [Field] = []) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.fields = fields
    }

    /// The value of the last field named `key` (A1111 keeps the last of repeated keys).
    public subscript(key: String) -> String? {
        fields.last { $0.key == key }?.value
    }

    // MARK: Writing

    /// The text as A1111 writes it: the prompt, `Negative prompt: …` when there is one, and the
    /// fields joined by ", " with values quoted by `quote`. (A1111 also trims the whole text; the
    /// prompt is written as given here, so what was typed is what is recorded.)
    public var text: String {
        var lines = [prompt]
        if !negativePrompt.isEmpty { lines.append("Negative prompt: \(negativePrompt)") }
        if !fields.isEmpty {
            lines.append(fields.map { "\($0.key): \(Self.quote($0.value))" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    /// A1111's `quote`: the value itself, or, when it contains `,`, `:` or a newline, the JSON
    /// string of it (`json.dumps(value, ensure_ascii=False)`: only `"`, `\` and control
    /// characters are escaped).
    public static func quote(_ value: String) -> String {
        guard value.unicodeScalars.contains(where: { $0 == "," || $0 == ":" || $0 == "\n" }) else { return value }
        return jsonStringLiteral(value)
    }

    // MARK: Reading

    /// Parses `text` with A1111's rules (see the type's documentation).
    public init(parsing text: String) {
        var lines = Self.split(Self.trimmed(Array(text.unicodeScalars)), on: "\n")
        var last = lines.removeLast()
        if Self.findFields(last).count < 3 {
            lines.append(last)
            last = []
        }
        let marker = Array("Negative prompt:".unicodeScalars)
        var prompt: [String] = [], negative: [String] = []
        var inNegative = false
        for raw in lines {
            var line = Self.trimmed(raw)
            if line.starts(with: marker) {
                inNegative = true
                line = Self.trimmed(Array(line.dropFirst(marker.count)))
            }
            // A1111 appends "\n" + line only once its text is non-empty, so leading empty lines vanish
            if inNegative {
                if negative.isEmpty && line.isEmpty { continue }
                negative.append(Self.string(line))
            } else {
                if prompt.isEmpty && line.isEmpty { continue }
                prompt.append(Self.string(line))
            }
        }
        self.prompt = prompt.joined(separator: "\n")
        self.negativePrompt = negative.joined(separator: "\n")
        self.fields = Self.findFields(last).compactMap { key, value in
            // `v[0]` on an empty value raises inside A1111's try, which skips the field
            guard let first = value.first, let lastScalar = value.last else { return nil }
            let string = Self.string(value)
            return Field(Self.string(key), first == "\"" && lastScalar == "\"" ? Self.unquote(string) : string)
        }
    }

    /// The dictionary A1111's parser builds before it fills in its defaults: `Prompt`,
    /// `Negative prompt`, then each field, where a value of the form `WxH` becomes two entries
    /// `key-1` (W) and `key-2` (H), e.g. `Size-1`, `Size-2`.
    public var a1111Parameters: [String: String] {
        var result = ["Prompt": prompt, "Negative prompt": negativePrompt]
        for field in fields {
            if let (w, h) = Self.imageSize(field.value) {
                result["\(field.key)-1"] = w
                result["\(field.key)-2"] = h
            } else {
                result[field.key] = field.value
            }
        }
        return result
    }

    /// `^(\d+)x(\d+)$` as Python matches it (`$` also before a final newline).
    static func imageSize(_ value: String) -> (String, String)? {
        var scalars = Array(value.unicodeScalars)
        if scalars.last == "\n" { scalars.removeLast() }
        guard let x = scalars.firstIndex(of: "x"), x > 0, x < scalars.count - 1 else { return nil }
        let w = scalars[..<x], h = scalars[(x + 1)...]
        guard (w + h).allSatisfy({ $0.properties.generalCategory == .decimalNumber }) else { return nil }
        return (string(Array(w)), string(Array(h)))
    }

    /// A1111's `unquote`: a JSON string decoded, or the text unchanged when it is not valid JSON.
    static func unquote(_ text: String) -> String {
        guard let data = text.data(using: .utf8),
              let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? String
        else { return text }
        return value
    }

    /// Python's `re.findall` of A1111's field pattern `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`,
    /// matched by hand: the pattern needs no real backtracking (the key's run must end at the
    /// colon; the quoted form is tried first and the unquoted one always matches). Where a match
    /// fails, every start up to the point where it failed fails the same way, so the search
    /// resumes there: linear time on hostile text, where a regex engine would be quadratic.
    static func findFields(_ s: [Unicode.Scalar]) -> [(key: [Unicode.Scalar], value: [Unicode.Scalar])] {
        var found: [(key: [Unicode.Scalar], value: [Unicode.Scalar])] = []
        var start = 0
        while start < s.count {
            switch matchField(s, at: start) {
            case let .match(key, value, end):
                found.append((key, value))
                start = end
            case let .resume(at):
                start = max(at, start + 1)
            }
        }
        return found
    }

    private enum FieldMatch {
        case match(key: [Unicode.Scalar], value: [Unicode.Scalar], end: Int)
        /// No match at this start, nor at any start before `at`.
        case resume(at: Int)
    }

    private static func matchField(_ s: [Unicode.Scalar], at start: Int) -> FieldMatch {
        let n = s.count
        var i = start
        while i < n && isSpace(s[i]) { i += 1 }
        guard i < n, isWord(s[i]) else { return .resume(at: i + 1) }
        let keyStart = i
        i += 1
        let runStart = i
        while i < n && (isWord(s[i]) || s[i] == " " || s[i] == "-" || s[i] == "/") { i += 1 }
        // starts inside the run reach the same end, which is not a colon
        guard i > runStart, i < n, s[i] == ":" else { return .resume(at: i) }
        let key = Array(s[keyStart..<i])
        i += 1
        while i < n && isSpace(s[i]) { i += 1 }
        let valueStart = i
        if i < n && s[i] == "\"" {
            var j = i + 1
            while j < n {
                if s[j] == "\\" {
                    // `\\.`: the escaped character may be anything but a newline
                    guard j + 1 < n, s[j + 1] != "\n" else { break }
                    j += 2
                } else if s[j] == "\"" {
                    break
                } else {
                    j += 1
                }
            }
            if j < n, s[j] == "\"", j > i + 1 {
                let end = j + 1
                if end == n { return .match(key: key, value: Array(s[valueStart..<end]), end: end) }
                if s[end] == "," { return .match(key: key, value: Array(s[valueStart..<end]), end: end + 1) }
            }
        }
        var j = i
        while j < n && s[j] != "," { j += 1 }
        return .match(key: key, value: Array(s[valueStart..<j]), end: j < n ? j + 1 : j)
    }

    /// Python's `str.isspace` (also what `\s` matches in a str pattern).
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// Python's `\w` in a str pattern: letters, numbers and the underscore.
    static func isWord(_ c: Unicode.Scalar) -> Bool {
        if c == "_" { return true }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return c.properties.numericType != nil
        }
    }

    static func trimmed(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var lower = 0, upper = s.count
        while lower < upper && isSpace(s[lower]) { lower += 1 }
        while upper > lower && isSpace(s[upper - 1]) { upper -= 1 }
        return Array(s[lower..<upper])
    }

    static func split(_ s: [Unicode.Scalar], on separator: Unicode.Scalar) -> [[Unicode.Scalar]] {
        s.split(separator: separator, omittingEmptySubsequences: false).map(Array.init)
    }

    static func string(_ s: [Unicode.Scalar]) -> String {
        var out = ""
        out.unicodeScalars.append(contentsOf: s)
        return out
    }
}
