/// The directory of a zip archive held in memory (a mapped file), as PyTorch's `torch.save` writes
/// it: only *stored* (uncompressed) entries are readable, and they are read in place, so a 4 GB
/// checkpoint costs no copy. ZIP64 archives (every checkpoint over 4 GB) are understood.
///
/// The bytes are untrusted: every offset and length read from the archive is checked against the
/// buffer before use, arithmetic cannot overflow, and a malformed archive is a thrown
/// `WeightsError.corruptFile`, never a trap (release builds run unchecked). CRCs are not verified:
/// entries are read lazily through the mapping, as safetensors data is.
struct ZipArchive {
    /// One file of the archive.
    struct Entry {
        var name: String
        /// Where the entry's bytes lie in the buffer (validated to be inside it).
        var data: Range<Int>
    }

    /// Entries in central-directory order.
    let entries: [Entry]
    private let index: [String: Int]

    /// The entry called `name`, or nil.
    func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

    // Signatures (little-endian "PK\u{1}\u{2}" and so on).
    static let localHeaderSignature: UInt32 = 0x0403_4b50
    static let centralHeaderSignature: UInt32 = 0x0201_4b50
    static let endSignature: UInt32 = 0x0605_4b50
    static let zip64EndSignature: UInt32 = 0x0606_4b50
    static let zip64LocatorSignature: UInt32 = 0x0706_4b50

    /// Whether `bytes` start like a zip archive (a local file header, or the end record of an empty one).
    static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        let signature = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        return signature == localHeaderSignature || signature == endSignature
    }

    /// Reads the central directory of the archive in `bytes`; `path` names the file in errors.
    init(_ bytes: UnsafeRawBufferPointer, path: String) throws {
        let reader = ZipReader(bytes: bytes, path: path)
        let size = bytes.count
        func corrupt(_ problem: String) -> WeightsError {
            .corruptFile(path: path, problem: "is a zip archive (PyTorch format) whose \(problem); the file is "
                + "truncated or corrupt")
        }

        // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the very end.
        // The last signature whose comment ends exactly at the end of the file is taken.
        guard size >= 22 else { throw corrupt("size (\(size) bytes) is too small for its directory") }
        var end = -1
        var candidate = size - 22
        let lowest = max(0, size - 22 - 65535)
        while candidate >= lowest {
            if try reader.u32(candidate) == Self.endSignature,
               candidate + 22 + Int(try reader.u16(candidate + 20)) == size {
                end = candidate
                break
            }
            candidate -= 1
        }
        guard end >= 0 else { throw corrupt("end-of-directory record is missing") }
        var count = Int(try reader.u16(end + 10))
        var directorySize = Int(try reader.u32(end + 12))
        var directoryOffset = Int(try reader.u32(end + 16))

        // ZIP64: the classic fields overflowed; a locator just before the end record points at the
        // 64-bit end record.
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            let locator = end - 20
            guard locator >= 0, try reader.u32(locator) == Self.zip64LocatorSignature else {
                throw corrupt("directory fields overflow but it has no ZIP64 locator")
            }
            let record = try reader.offset(reader.u64(locator + 8), "ZIP64 end record offset")
            guard try reader.u32(record) == Self.zip64EndSignature else {
                throw corrupt("ZIP64 locator points at offset \(record), where there is no ZIP64 end record")
            }
            count = try reader.offset(reader.u64(record + 32), "ZIP64 entry count")
            directorySize = try reader.offset(reader.u64(record + 40), "ZIP64 directory size")
            directoryOffset = try reader.offset(reader.u64(record + 48), "ZIP64 directory offset")
        }
        guard directoryOffset <= size, directorySize <= size - directoryOffset else {
            throw corrupt("central directory (\(directorySize) bytes at offset \(directoryOffset)) lies past "
                + "the end of the file (\(size) bytes)")
        }
        // Each directory record takes at least 46 bytes: a huge count cannot make us allocate.
        guard count <= directorySize / 46 else {
            throw corrupt("directory claims \(count) entries but is only \(directorySize) bytes long")
        }

        var entries: [Entry] = []
        entries.reserveCapacity(count)
        var index: [String: Int] = [:]
        var at = directoryOffset
        let directoryEnd = directoryOffset + directorySize
        for n in 0..<count {
            guard at <= directoryEnd - 46, try reader.u32(at) == Self.centralHeaderSignature else {
                throw corrupt("central directory record \(n) at offset \(at) is missing or cut short")
            }
            let flags = try reader.u16(at + 8)
            let method = try reader.u16(at + 10)
            var compressedSize = Int(try reader.u32(at + 20))
            var size = Int(try reader.u32(at + 24))
            let nameLength = Int(try reader.u16(at + 28))
            let extraLength = Int(try reader.u16(at + 30))
            let commentLength = Int(try reader.u16(at + 32))
            var localOffset = Int(try reader.u32(at + 42))
            let recordEnd = at + 46 + nameLength + extraLength + commentLength
            guard recordEnd <= directoryEnd else {
                throw corrupt("central directory record \(n) runs past the end of the directory")
            }
            let name = try reader.string(at + 46, count: nameLength)

            // ZIP64 extended information: 64-bit values for exactly the fields that are 0xFFFFFFFF.
            if size == 0xFFFF_FFFF || compressedSize == 0xFFFF_FFFF || localOffset == 0xFFFF_FFFF {
                var field = at + 46 + nameLength
                let extraEnd = field + extraLength
                var found = false
                while field + 4 <= extraEnd {
                    let id = try reader.u16(field), length = Int(try reader.u16(field + 2))
                    let bodyEnd = field + 4 + length
                    guard bodyEnd <= extraEnd else { break }
                    if id == 1 {
                        var value = field + 4
                        func next(_ what: String) throws -> Int {
                            guard value + 8 <= bodyEnd else {
                                throw corrupt("ZIP64 field of entry \"\(name)\" lacks its \(what)")
                            }
                            defer { value += 8 }
                            return try reader.offset(reader.u64(value), "\(what) of entry \"\(name)\"")
                        }
                        if size == 0xFFFF_FFFF { size = try next("size") }
                        if compressedSize == 0xFFFF_FFFF { compressedSize = try next("compressed size") }
                        if localOffset == 0xFFFF_FFFF { localOffset = try next("header offset") }
                        found = true
                        break
                    }
                    field = bodyEnd
                }
                guard found else { throw corrupt("entry \"\(name)\" has 32-bit overflow markers but no ZIP64 field") }
            }
            guard flags & 1 == 0 else {
                throw WeightsError.corruptFile(path: path, problem: "is a zip archive whose entry \"\(name)\" "
                    + "is encrypted; encrypted archives cannot be read, save the weights again unencrypted")
            }
            guard method == 0 else {
                let kind = method == 8 ? "deflate" : "method \(method)"
                throw WeightsError.corruptFile(path: path, problem: "is a zip archive whose entry \"\(name)\" is "
                    + "compressed (\(kind)); only stored (uncompressed) entries are read, as torch.save writes "
                    + "them. Was the file re-zipped? Save it again with torch.save, or convert it to safetensors")
            }
            guard compressedSize == size else {
                throw corrupt("stored entry \"\(name)\" has compressed size \(compressedSize) but size \(size)")
            }

            // The local header repeats the name; its own extra field (torch pads there to align the
            // data) decides where the data begins. Sizes come from the directory: torch writes them
            // in data descriptors, leaving the local header's zero.
            guard localOffset <= reader.bytes.count - 30, try reader.u32(localOffset) == Self.localHeaderSignature else {
                throw corrupt("entry \"\(name)\" points at offset \(localOffset), where there is no local header")
            }
            let localNameLength = Int(try reader.u16(localOffset + 26))
            let localExtraLength = Int(try reader.u16(localOffset + 28))
            guard try reader.string(localOffset + 30, count: localNameLength) == name else {
                throw corrupt("entry \"\(name)\" has a different name in its local header")
            }
            let dataStart = localOffset + 30 + localNameLength + localExtraLength
            guard dataStart <= reader.bytes.count, size <= reader.bytes.count - dataStart else {
                throw corrupt("entry \"\(name)\" (\(size) bytes at offset \(dataStart)) lies past the end of "
                    + "the file (\(reader.bytes.count) bytes)")
            }
            guard index[name] == nil else { throw corrupt("entry \"\(name)\" appears twice") }
            index[name] = entries.count
            entries.append(Entry(name: name, data: dataStart..<(dataStart + size)))
            at = recordEnd
        }
        self.entries = entries
        self.index = index
    }
}

/// Bounds-checked little-endian reads from untrusted bytes; every failure is a `WeightsError`.
private struct ZipReader {
    let bytes: UnsafeRawBufferPointer
    let path: String

    private func check(_ offset: Int, _ width: Int) throws {
        guard offset >= 0, offset <= bytes.count - width else {
            throw WeightsError.corruptFile(path: path, problem: "is a zip archive with a field at offset \(offset) "
                + "past the end of the file (\(bytes.count) bytes); the file is truncated or corrupt")
        }
    }

    func u16(_ offset: Int) throws -> UInt16 {
        try check(offset, 2)
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    func u32(_ offset: Int) throws -> UInt32 {
        try check(offset, 4)
        return (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    func u64(_ offset: Int) throws -> UInt64 {
        try check(offset, 8)
        return (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    /// A 64-bit size or offset as an `Int` no larger than the buffer (anything larger cannot be valid).
    func offset(_ value: UInt64, _ what: String) throws -> Int {
        guard value <= UInt64(bytes.count) else {
            throw WeightsError.corruptFile(path: path, problem: "is a zip archive whose \(what) (\(value)) "
                + "exceeds the file size (\(bytes.count) bytes); the file is truncated or corrupt")
        }
        return Int(value)
    }

    /// `count` bytes at `offset` as UTF-8 (invalid sequences repaired: names are compared, not trusted).
    func string(_ offset: Int, count: Int) throws -> String {
        try check(offset, count)
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)]), as: UTF8.self)
    }
}
