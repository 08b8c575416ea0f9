import Foundation

/// GPT-2's reversible byte → printable character table (`bytes_to_unicode`): printable Latin-1 bytes map to
/// themselves, the remaining 68 bytes to U+0100 and up, in byte order.
let byteLevelAlphabet: [String] = {
    var direct = Set<Int>()
    for range in [0x21...0x7E, 0xA1...0xAC, 0xAE...0xFF] { direct.formUnion(range) }
    var table = [String](repeating: "", count: 256)
    var next = 256
    for byte in 0..<256 {
        let code: Int
        if direct.contains(byte) { code = byte } else { code = next; next += 1 }
        table[byte] = String(Character(Unicode.Scalar(UInt32(code))!))
    }
    return table
}()

/// The BPE model of `tokenizers` (`BPE` with `end_of_word_suffix = "</w>"`, no dropout, `fuse_unk = false`),
/// working on token ids: a word's bytes start as their byte-level symbols (the last one with `</w>`), then the
/// adjacent pair with the lowest merge rank (leftmost on ties) is merged until no pair has a merge.
/// Results are cached per word; the cache is shared by copies of the tokenizer and guarded by a lock.
final class BytePairEncoder: @unchecked Sendable {
    /// Token (UTF-8 bytes, compared byte for byte, not up to Unicode equivalence) → id.
    private let vocabulary: [[UInt8]: Int]
    /// Id of each byte's symbol inside a word, and as the last symbol of a word (with `</w>`); -1 if absent.
    private let byteIDs: [Int32]
    private let finalByteIDs: [Int32]
    /// (left id << 32 | right id) → (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    private let unknownID: Int32

    private let lock = NSLock()
    private var cache: [[UInt8]: [Int32]] = [:]
    private static let cacheCapacity = 50_000
    private static let longestCachedWord = 128

    init(vocabularyURL: URL, mergesURL: URL, unknownToken: String) throws {
        let vocabulary = try Self.readVocabulary(vocabularyURL)
        self.vocabulary = vocabulary
        var byteIDs = [Int32](repeating: -1, count: 256)
        var finalByteIDs = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            let symbol = Array(byteLevelAlphabet[byte].utf8)
            if let id = vocabulary[symbol] { byteIDs[byte] = Int32(id) }
            if let id = vocabulary[symbol + Array("</w>".utf8)] { finalByteIDs[byte] = Int32(id) }
        }
        self.byteIDs = byteIDs
        self.finalByteIDs = finalByteIDs
        self.unknownID = vocabulary[Array(unknownToken.utf8)].map(Int32.init) ?? -1
        self.merges = try Self.readMerges(mergesURL, vocabulary: vocabulary)
    }

    /// The id of `token` (exact code points), if it is in the vocabulary.
    func id(of token: String) -> Int? { vocabulary[Array(token.utf8)] }

    /// Id → token string as vocab.json spells it (built on each call; for display).
    func tokensByID() -> [Int: String] {
        var out: [Int: String] = [:]
        for (bytes, id) in vocabulary { out[id] = String(decoding: bytes, as: UTF8.self) }
        return out
    }

    // MARK: loading

    static func readData(_ url: URL) throws -> Data {
        guard FileManager.default.fileExists(atPath: url.path) else { throw TokenizerError.missingFile(url) }
        do { return try Data(contentsOf: url) } catch {
            throw TokenizerError.unreadableFile(url, reason: "\(error)")
        }
    }

    /// vocab.json: a JSON object of token → id (like `tokenizers`, ids must be non-negative integers).
    static func readVocabulary(_ url: URL) throws -> [[UInt8]: Int] {
        let data = try readData(url)
        if let vocabulary = data.withUnsafeBytes({ raw -> [[UInt8]: Int]? in
            var parser = FlatJSONParser(bytes: raw)
            return parser.parseVocabulary()
        }), !vocabulary.isEmpty {
            return vocabulary
        }
        // Anything the fast parser does not handle (or rejects) goes through Foundation for a precise diagnosis.
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw TokenizerError.malformedVocabulary(url, reason: "not valid JSON (\(error))")
        }
        guard let dictionary = object as? [String: Any] else {
            throw TokenizerError.malformedVocabulary(url, reason: "expected a JSON object of token → id")
        }
        var vocabulary = [[UInt8]: Int](minimumCapacity: dictionary.count)
        for (token, value) in dictionary {
            guard let number = value as? NSNumber, let id = Int(exactly: number.doubleValue),
                  id >= 0, id <= Int(Int32.max) else {
                throw TokenizerError.malformedVocabulary(url, reason: "id of token \(String(reflecting: token)) is not a non-negative integer")
            }
            vocabulary[Array(token.utf8)] = id
        }
        if vocabulary.isEmpty { throw TokenizerError.malformedVocabulary(url, reason: "empty vocabulary") }
        return vocabulary
    }

    /// merges.txt: an optional `#version` line, then one `left right` pair per line, highest priority first.
    /// As in `tokenizers`, every other line must split on single spaces into exactly two tokens, and the two
    /// tokens and their concatenation must be in the vocabulary. Lines end with "\n" or "\r\n".
    static func readMerges(_ url: URL, vocabulary: [[UInt8]: Int]) throws -> [UInt64: UInt64] {
        let bytes = [UInt8](try readData(url))
        var merges = [UInt64: UInt64](minimumCapacity: 1 << 16)
        var rank: UInt64 = 0
        var lineNumber = 0
        var start = 0
        let version = Array("#version".utf8)
        while start < bytes.count {
            lineNumber += 1
            var end = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
            let next = end + 1
            if end < bytes.count, end > start, bytes[end - 1] == 0x0D { end -= 1 }
            defer { start = next }
            let line = bytes[start..<end]
            if line.starts(with: version) { continue }
            func fail(_ reason: String) -> TokenizerError {
                .malformedMerges(url, line: lineNumber, reason: reason)
            }
            guard let space = line.firstIndex(of: 0x20), !line[(space + 1)...].contains(0x20) else {
                throw fail("expected two space-separated tokens, got \(String(reflecting: String(decoding: line, as: UTF8.self)))")
            }
            let left = Array(line[..<space]), right = Array(line[(space + 1)...])
            guard let a = vocabulary[left] else {
                throw fail("token \(String(reflecting: String(decoding: left, as: UTF8.self))) is not in the vocabulary")
            }
            guard let b = vocabulary[right] else {
                throw fail("token \(String(reflecting: String(decoding: right, as: UTF8.self))) is not in the vocabulary")
            }
            guard let merged = vocabulary[left + right] else {
                throw fail("merged token \(String(reflecting: String(decoding: left + right, as: UTF8.self))) is not in the vocabulary")
            }
            merges[UInt64(a) << 32 | UInt64(b)] = rank << 32 | UInt64(merged)
            rank += 1
        }
        return merges
    }

    // MARK: encoding

    /// Appends the ids of one pre-tokenized word (its UTF-8 bytes) to `output`.
    func encodeWord(_ bytes: [UInt8], into output: inout [Int]) {
        guard !bytes.isEmpty else { return }
        let cacheable = bytes.count <= Self.longestCachedWord
        if cacheable {
            lock.lock()
            let hit = cache[bytes]
            lock.unlock()
            if let hit {
                for id in hit { output.append(Int(id)) }
                return
            }
        }
        let ids = merge(bytes)
        for id in ids { output.append(Int(id)) }
        if cacheable {
            lock.lock()
            if cache.count >= Self.cacheCapacity { cache.removeAll(keepingCapacity: true) }
            cache[bytes] = ids
            lock.unlock()
        }
    }

    @inline(__always) private func lookup(_ left: Int32, _ right: Int32) -> (rank: UInt32, id: Int32)? {
        guard left >= 0, right >= 0, let value = merges[UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))] else { return nil }
        return (UInt32(truncatingIfNeeded: value >> 32), Int32(truncatingIfNeeded: value & 0xFFFF_FFFF))
    }

    /// `tokenizers`' `Word::merge_all`: a priority queue of candidate merges ordered by (rank, position),
    /// stale candidates skipped, so the result equals "always merge the lowest-ranked, leftmost pair".
    private func merge(_ bytes: [UInt8]) -> [Int32] {
        let n = bytes.count
        var symbols = [Int32](repeating: 0, count: n)
        for i in 0..<n {
            let id = i == n - 1 ? finalByteIDs[Int(bytes[i])] : byteIDs[Int(bytes[i])]
            symbols[i] = id >= 0 ? id : unknownID
        }
        if n == 1 { return symbols[0] >= 0 ? symbols : [] }

        var next = [Int](unsafeUninitializedCapacity: n) { buffer, count in
            for i in 0..<n { buffer[i] = i + 1 < n ? i + 1 : -1 }
            count = n
        }
        var previous = [Int](unsafeUninitializedCapacity: n) { buffer, count in
            for i in 0..<n { buffer[i] = i - 1 }
            count = n
        }
        var alive = [Bool](repeating: true, count: n)
        var queue = MergeQueue()
        for i in 0..<(n - 1) {
            if let m = lookup(symbols[i], symbols[i + 1]) { queue.push(.init(rank: m.rank, position: Int32(i), id: m.id)) }
        }
        while let top = queue.pop() {
            let pos = Int(top.position)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = next[pos]
            guard let m = lookup(symbols[pos], symbols[right]), m.id == top.id else { continue }
            symbols[pos] = top.id
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { previous[next[right]] = pos }
            if previous[pos] >= 0, let p = lookup(symbols[previous[pos]], top.id) {
                queue.push(.init(rank: p.rank, position: Int32(previous[pos]), id: p.id))
            }
            if next[pos] >= 0, let p = lookup(top.id, symbols[next[pos]]) {
                queue.push(.init(rank: p.rank, position: Int32(pos), id: p.id))
            }
        }
        var result: [Int32] = []
        result.reserveCapacity(n)
        var i = 0
        while i >= 0 && i < n {
            if symbols[i] >= 0 { result.append(symbols[i]) }  // no unknown token in the vocabulary: dropped
            i = next[i]
        }
        return result
    }
}

/// A binary min-heap of merge candidates ordered by (rank, position).
private struct MergeQueue {
    struct Candidate {
        var rank: UInt32
        var position: Int32
        var id: Int32
        @inline(__always) func precedes(_ other: Candidate) -> Bool {
            rank != other.rank ? rank < other.rank : position < other.position
        }
    }

    private var heap: [Candidate] = []

    mutating func push(_ candidate: Candidate) {
        heap.append(candidate)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Candidate? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var best = parent
            if left < heap.count, heap[left].precedes(heap[best]) { best = left }
            if right < heap.count, heap[right].precedes(heap[best]) { best = right }
            if best == parent { break }
            heap.swapAt(parent, best)
            parent = best
        }
        return top
    }
}

/// A fast parser for the common shape of vocab.json: one flat object of string keys and integer values.
/// Returns nil for anything else (floats, nesting, invalid escapes, trailing garbage), leaving the diagnosis
/// to `JSONSerialization`. Keys come back as UTF-8 bytes; a repeated key keeps its last value.
private struct FlatJSONParser {
    let bytes: UnsafeRawBufferPointer
    var i = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func parseVocabulary() -> [[UInt8]: Int]? {
        var result = [[UInt8]: Int](minimumCapacity: bytes.count / 20)
        skipSpace()
        guard consume(0x7B) else { return nil }  // {
        skipSpace()
        if consume(0x7D) { return atEnd() ? result : nil }
        while true {
            skipSpace()
            guard let key = parseString() else { return nil }
            skipSpace()
            guard consume(0x3A) else { return nil }  // :
            skipSpace()
            guard let value = parseInteger() else { return nil }
            result[key] = value
            skipSpace()
            if consume(0x2C) { continue }  // ,
            guard consume(0x7D) else { return nil }  // }
            return atEnd() ? result : nil
        }
    }

    private mutating func atEnd() -> Bool {
        skipSpace()
        return i == bytes.count
    }

    private mutating func skipSpace() {
        while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard i < bytes.count, bytes[i] == byte else { return false }
        i += 1
        return true
    }

    private mutating func parseInteger() -> Int? {
        var value = 0, digits = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            value = value * 10 + Int(bytes[i] - 0x30)
            digits += 1
            i += 1
            if digits > 10 { return nil }
        }
        guard digits > 0, value <= Int(Int32.max) else { return nil }
        if i < bytes.count, [0x2E, 0x65, 0x45].contains(bytes[i]) { return nil }  // . e E: not an integer literal
        return value
    }

    private mutating func hex4() -> UInt32? {
        guard i + 4 <= bytes.count else { return nil }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: return nil
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    private mutating func parseString() -> [UInt8]? {
        guard consume(0x22) else { return nil }
        var out: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            switch c {
            case 0x22:
                // Invalid UTF-8 decodes with replacement characters, so a lossless round trip means valid.
                if out.contains(where: { $0 >= 0x80 }), !String(decoding: out, as: UTF8.self).utf8.elementsEqual(out) { return nil }
                return out
            case 0x5C:
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case 0x22, 0x5C, 0x2F: out.append(e)
                case 0x62: out.append(0x08)
                case 0x66: out.append(0x0C)
                case 0x6E: out.append(0x0A)
                case 0x72: out.append(0x0D)
                case 0x74: out.append(0x09)
                case 0x75:
                    guard var code = hex4() else { return nil }
                    if (0xD800...0xDBFF).contains(code) {
                        guard consume(0x5C), consume(0x75), let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return nil }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { return nil }
                    UTF8.encode(scalar) { out.append($0) }
                default: return nil
                }
            case 0x00...0x1F:
                return nil
            default:
                out.append(c)
            }
        }
        return nil
    }
}
