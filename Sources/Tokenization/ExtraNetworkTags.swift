/// An AUTOMATIC1111 "extra network" tag in a prompt, such as `<lora:film grain:0.8>`: a kind
/// (`lora`) and its colon-separated arguments (`film grain`, `0.8`).
public struct ExtraNetworkTag: Sendable, Equatable {
    public var kind: String
    public var arguments: [String]
    /// The tag as written, brackets included.
    public var text: String

    public init(kind: String, arguments: [String], text: String) {
        self.kind = kind
        self.arguments = arguments
        self.text = text
    }

    /// The arguments without a `=`, in order (A1111's positional arguments).
    public var positional: [String] { arguments.filter { !$0.contains("=") } }

    /// The `key=value` arguments (A1111's named arguments, e.g. `te=0.5`).
    public var named: [String: String] {
        var result: [String: String] = [:]
        for argument in arguments {
            guard let eq = argument.firstIndex(of: "=") else { continue }
            result[String(argument[..<eq])] = String(argument[argument.index(after: eq)...])
        }
        return result
    }
}

public enum ExtraNetworkTags {
    /// The prompt without its extra-network tags, and the tags in order, as A1111 finds them with
    /// the pattern `<(\w+):([^>]+)>`: a kind of letters, digits and underscores, a colon, then
    /// anything up to the next `>`, split at colons. The text around a tag is left as it is.
    public static func extract(_ prompt: String) -> (text: String, tags: [ExtraNetworkTag]) {
        let scalars = Array(prompt.unicodeScalars)
        var text = String.UnicodeScalarView(), tags: [ExtraNetworkTag] = []
        var i = 0
        while i < scalars.count {
            if scalars[i] == "<", let (tag, end) = tag(in: scalars, at: i) {
                tags.append(tag)
                i = end
            } else {
                text.append(scalars[i])
                i += 1
            }
        }
        return (String(text), tags)
    }

    /// The tag starting at `start` (a `<`) and the index after its `>`, or nil if none starts there.
    private static func tag(in s: [Unicode.Scalar], at start: Int) -> (ExtraNetworkTag, Int)? {
        var i = start + 1
        while i < s.count, isWordCharacter(s[i]) { i += 1 }
        guard i > start + 1, i < s.count, s[i] == ":" else { return nil }
        let kind = String(String.UnicodeScalarView(s[(start + 1)..<i]))
        let argumentsStart = i + 1
        var j = argumentsStart
        while j < s.count, s[j] != ">" { j += 1 }
        guard j < s.count, j > argumentsStart else { return nil }
        let body = String(String.UnicodeScalarView(s[argumentsStart..<j]))
        let text = String(String.UnicodeScalarView(s[start...j]))
        return (ExtraNetworkTag(kind: kind, arguments: body.split(separator: ":", omittingEmptySubsequences: false).map(String.init),
                                text: text), j + 1)
    }

    /// Python's `\w` on str: letters, digits (any script) and the underscore.
    private static func isWordCharacter(_ c: Unicode.Scalar) -> Bool {
        c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
    }
}
