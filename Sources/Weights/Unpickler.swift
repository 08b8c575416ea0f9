/// A value built by the restricted unpickler. Containers that pickle mutates after creating them
/// (lists, dicts, objects receiving state) are reference boxes, as in Python, so that a memoized
/// reference sees later appends.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer too large for 64 bits (kept only as a placeholder: tensor files use none).
    case bigInt
    case float(Double)
    case string(String)
    case bytes(count: Int)
    /// Immutable; `depth` is its nesting of tuples (bounded, so that freeing it cannot exhaust the stack).
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    /// An allow-listed global (class or function), named "module.name"; never imported, only named.
    case global(String)
    /// An instance of an allow-listed class that is kept opaque (e.g. a training callback).
    case object(PickleObject)
    case storage(PickleStorage)
    case tensor(PickleTensor)

    /// What kind of value this is, for error messages.
    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int, .bigInt: return "an int"
        case .float: return "a float"
        case .string: return "a string"
        case .bytes: return "bytes"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .dict: return "a dict"
        case let .global(name): return name
        case let .object(o): return "a \(o.type) object"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }

    var tupleDepth: Int {
        if case let .tuple(_, depth) = self { return depth }
        return 0
    }
}

final class PickleList {
    var items: [PickleValue] = []
}

/// A dict in insertion order; string and int keys replace earlier equal keys, as Python's would.
final class PickleDict {
    enum Key: Hashable { case string(String), int(Int) }
    private(set) var items: [(key: PickleValue, value: PickleValue)] = []
    private var position: [Key: Int] = [:]

    func set(_ key: PickleValue, _ value: PickleValue) {
        let hashable: Key?
        switch key {
        case let .string(s): hashable = .string(s)
        case let .int(i): hashable = .int(i)
        default: hashable = nil
        }
        if let hashable, let i = position[hashable] {
            items[i].value = value
            return
        }
        if let hashable { position[hashable] = items.count }
        items.append((key, value))
    }

    func removeAll() {
        items = []
        position = [:]
    }
}

final class PickleObject {
    /// The class, "module.name".
    let type: String
    /// What BUILD gave it (its `__dict__` or `__setstate__` argument), if anything.
    var state: PickleValue?

    init(type: String) { self.type = type }
}

/// Owns every box an unpickle creates. Hostile pickles can make boxes refer to themselves, or chain
/// them a million deep; when the arena goes, it empties them all, so the cycles are broken and
/// freeing never recurses deeply. It also bounds how many boxes one pickle may create (each costs
/// memory even when the pickle drops it at once).
final class PickleArena {
    /// Far above real files (a checkpoint makes about one OrderedDict per tensor).
    static let maxBoxes = 1 << 22

    private let path: String
    private var lists: [PickleList] = []
    private var dicts: [PickleDict] = []
    private var objects: [PickleObject] = []

    /// An arena for the pickle of the file at `path` (for the error when it creates too many boxes).
    init(path: String) { self.path = path }

    private func reserve() throws {
        guard lists.count + dicts.count + objects.count < Self.maxBoxes else {
            throw WeightsError.corruptFile(path: path, problem: "has a pickle that creates more than "
                + "\(Self.maxBoxes) lists, dicts and objects; a tensor file does not")
        }
    }

    func list() throws -> PickleList {
        try reserve()
        let l = PickleList()
        lists.append(l)
        return l
    }

    func dict() throws -> PickleDict {
        try reserve()
        let d = PickleDict()
        dicts.append(d)
        return d
    }

    func object(_ type: String) throws -> PickleObject {
        try reserve()
        let o = PickleObject(type: type)
        objects.append(o)
        return o
    }

    deinit {
        for l in lists { l.items = [] }
        for d in dicts { d.removeAll() }
        for o in objects { o.state = nil }
    }
}

/// What an unpickle may do beyond building plain values: the only doors to the outside, each
/// answered from an allow-list (see `TorchPickle`). Nothing is ever imported or executed.
protocol PickleEnvironment: AnyObject {
    /// The global `module.name` as a value, or an error naming it if it is not allowed.
    func global(module: String, name: String) throws -> PickleValue
    /// REDUCE: `callable(*args)`.
    func call(_ callable: PickleValue, _ args: [PickleValue]) throws -> PickleValue
    /// NEWOBJ: `cls.__new__(cls, *args)`.
    func newObject(_ cls: PickleValue, _ args: [PickleValue]) throws -> PickleValue
    /// BINPERSID: the object a persistent id stands for (a storage in tensor files).
    func persistentLoad(_ id: PickleValue) throws -> PickleValue
}

/// A restricted pickle virtual machine for protocols 2 to 5: it builds values and asks the
/// environment for everything else. Limits bound the stack, the memo, mark nesting and tuple
/// nesting; every length is checked against the bytes that remain, so a hostile pickle gives a
/// thrown error, never a crash, a hang or a huge allocation.
struct Unpickler {
    static let maxStack = 1 << 20
    static let maxMemo = 1 << 22
    static let maxMarks = 1000
    static let maxTupleDepth = 200

    private let bytes: UnsafeRawBufferPointer
    private let path: String
    private let environment: PickleEnvironment
    private let arena: PickleArena
    private var position = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    /// Unpickles `bytes` (the pickle named `entry` inside the file at `path`, for messages).
    static func load(_ bytes: UnsafeRawBufferPointer, path: String, entry: String,
                     environment: PickleEnvironment, arena: PickleArena) throws -> PickleValue {
        var machine = Unpickler(bytes: bytes, path: path, environment: environment, arena: arena)
        do {
            return try machine.run()
        } catch let problem as Problem {
            throw WeightsError.corruptFile(path: path, problem: "has a pickle (\(entry)) that \(problem.text) "
                + "at byte \(problem.offset); the file is corrupt or not a tensor file")
        }
    }

    private init(bytes: UnsafeRawBufferPointer, path: String, environment: PickleEnvironment, arena: PickleArena) {
        self.bytes = bytes
        self.path = path
        self.environment = environment
        self.arena = arena
    }

    /// A structural problem, located later by the opcode's offset.
    private struct Problem: Error {
        var text: String
        var offset: Int
    }

    private var opcodeStart = 0

    private func problem(_ text: String) -> Problem { Problem(text: text, offset: opcodeStart) }

    // MARK: - Reading

    private mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - position else {
            throw problem("is cut short (needs \(n) more bytes, \(bytes.count - position) remain)")
        }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    private mutating func byte() throws -> UInt8 { try take(1)[0] }

    /// An unsigned little-endian integer of `width` bytes.
    private mutating func unsigned(_ width: Int) throws -> UInt64 {
        let b = try take(width)
        var value: UInt64 = 0
        for i in (0..<width).reversed() { value = value << 8 | UInt64(b[i]) }
        return value
    }

    /// A length field of `width` bytes, checked against the bytes that remain.
    private mutating func length(_ width: Int) throws -> Int {
        let n = try unsigned(width)
        guard n <= UInt64(bytes.count - position) else {
            throw problem("declares \(n) bytes but only \(bytes.count - position) remain")
        }
        return Int(n)
    }

    /// A newline-terminated line (GLOBAL's module and name), at most 1000 bytes.
    private mutating func line() throws -> String {
        let start = position
        while position < bytes.count, position - start < 1000 {
            if bytes[position] == 0x0A {
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
                position += 1
                return text
            }
            position += 1
        }
        throw problem("has a GLOBAL name that is not terminated by a newline within 1000 bytes")
    }

    private mutating func utf8(_ n: Int) throws -> String {
        let b = try take(n)
        guard let s = String(validating: b, as: UTF8.self) else { throw problem("has a string that is not valid UTF-8") }
        return s
    }

    // MARK: - Stack

    private mutating func push(_ value: PickleValue) throws {
        guard stack.count < Self.maxStack else { throw problem("grows its stack past \(Self.maxStack) items") }
        stack.append(value)
    }

    /// The top item; items below the topmost mark are out of reach, as in Python's machine.
    private mutating func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0) else { throw problem("pops an empty stack") }
        return stack.removeLast()
    }

    /// The items above the topmost mark, which is removed.
    private mutating func popMark() throws -> [PickleValue] {
        guard let mark = marks.popLast() else { throw problem("needs a MARK that is not there") }
        guard mark <= stack.count else { throw problem("has a MARK above the stack") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private func tuple(_ items: [PickleValue]) throws -> PickleValue {
        let depth = 1 + (items.map(\.tupleDepth).max() ?? 0)
        guard depth <= Self.maxTupleDepth else { throw problem("nests tuples deeper than \(Self.maxTupleDepth)") }
        return .tuple(items, depth: depth)
    }

    private mutating func memoize(_ index: Int, _ value: PickleValue) throws {
        guard memo.count < Self.maxMemo || memo[index] != nil else {
            throw problem("memoizes more than \(Self.maxMemo) values")
        }
        memo[index] = value
    }

    private func recall(_ index: Int) throws -> PickleValue {
        guard let value = memo[index] else {
            throw problem("refers to memo entry \(index), which was never stored (\(memo.count) entries)")
        }
        return value
    }

    private func top() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let value = stack.last else { throw problem("reads an empty stack") }
        return value
    }

    // MARK: - The machine

    private mutating func run() throws -> PickleValue {
        while true {
            opcodeStart = position
            let op = try byte()
            switch op {
            case 0x80:  // PROTO
                let version = try byte()
                guard (2...5).contains(version) else {
                    throw problem("uses pickle protocol \(version); protocols 2 to 5 are supported")
                }
            case 0x95:  // FRAME: a length hint for buffered reading; checked, otherwise irrelevant
                _ = try length(8)
            case 0x2E:  // STOP
                return try pop()
            case 0x28:  // MARK
                guard marks.count < Self.maxMarks else { throw problem("nests MARKs deeper than \(Self.maxMarks)") }
                marks.append(stack.count)
            case 0x30:  // POP
                if stack.count > (marks.last ?? 0) { stack.removeLast() } else { _ = try popMark() }
            case 0x31:  // POP_MARK
                _ = try popMark()
            case 0x32:  // DUP
                try push(try top())
            case 0x4E: try push(.none)  // NONE
            case 0x88: try push(.bool(true))  // NEWTRUE
            case 0x89: try push(.bool(false))  // NEWFALSE
            case 0x4A:  // BININT
                try push(.int(Int(Int32(truncatingIfNeeded: try unsigned(4)))))
            case 0x4B: try push(.int(Int(try unsigned(1))))  // BININT1
            case 0x4D: try push(.int(Int(try unsigned(2))))  // BININT2
            case 0x8A, 0x8B:  // LONG1, LONG4: little-endian two's complement of n bytes
                let n = try length(op == 0x8A ? 1 : 4)
                let b = try take(n)
                if n == 0 {
                    try push(.int(0))
                } else if n <= 8 {
                    var value: UInt64 = b[n - 1] & 0x80 != 0 ? ~0 : 0
                    for i in (0..<n).reversed() { value = value << 8 | UInt64(b[i]) }
                    try push(.int(Int(Int64(bitPattern: value))))
                } else {
                    try push(.bigInt)
                }
            case 0x47:  // BINFLOAT: big-endian double
                let b = try take(8)
                var bits: UInt64 = 0
                for i in 0..<8 { bits = bits << 8 | UInt64(b[i]) }
                try push(.float(Double(bitPattern: bits)))
            case 0x58: try push(.string(try utf8(try length(4))))  // BINUNICODE
            case 0x8C: try push(.string(try utf8(try length(1))))  // SHORT_BINUNICODE
            case 0x8D: try push(.string(try utf8(try length(8))))  // BINUNICODE8
            case 0x54, 0x55:  // BINSTRING, SHORT_BINSTRING (Python 2 str; torch.load decodes as UTF-8)
                let b = try take(try length(op == 0x54 ? 4 : 1))
                try push(String(validating: b, as: UTF8.self).map { .string($0) } ?? .bytes(count: b.count))
            case 0x42: try push(.bytes(count: try take(try length(4)).count))  // BINBYTES
            case 0x43: try push(.bytes(count: try take(try length(1)).count))  // SHORT_BINBYTES
            case 0x8E, 0x96: try push(.bytes(count: try take(try length(8)).count))  // BINBYTES8, BYTEARRAY8
            case 0x29: try push(try tuple([]))  // EMPTY_TUPLE
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                let n = Int(op - 0x84)
                guard stack.count >= n, (marks.last ?? 0) <= stack.count - n else {
                    throw problem("builds a \(n)-tuple from fewer than \(n) items")
                }
                let items = Array(stack.suffix(n))
                stack.removeLast(n)
                try push(try tuple(items))
            case 0x74: try push(try tuple(try popMark()))  // TUPLE
            case 0x5D: try push(.list(try arena.list()))  // EMPTY_LIST
            case 0x6C:  // LIST
                let l = try arena.list()
                l.items = try popMark()
                try push(.list(l))
            case 0x61:  // APPEND
                let item = try pop()
                guard case let .list(l) = try top() else { throw problem("APPENDs to \(try top().kind), not a list") }
                l.items.append(item)
            case 0x65:  // APPENDS
                let items = try popMark()
                guard case let .list(l) = try top() else {
                    // Sets use ADDITEMS; anything else appended to is not something tensor files do.
                    throw problem("APPENDs to \(try top().kind), not a list")
                }
                l.items.append(contentsOf: items)
            case 0x7D: try push(.dict(try arena.dict()))  // EMPTY_DICT
            case 0x64:  // DICT
                let items = try popMark()
                guard items.count % 2 == 0 else { throw problem("builds a dict from an odd number of items") }
                let d = try arena.dict()
                for i in stride(from: 0, to: items.count, by: 2) { d.set(items[i], items[i + 1]) }
                try push(.dict(d))
            case 0x73:  // SETITEM
                let value = try pop(), key = try pop()
                guard case let .dict(d) = try top() else { throw problem("sets an item of \(try top().kind), not a dict") }
                d.set(key, value)
            case 0x75:  // SETITEMS
                let items = try popMark()
                guard items.count % 2 == 0 else { throw problem("sets items from an odd number of values") }
                guard case let .dict(d) = try top() else { throw problem("sets items of \(try top().kind), not a dict") }
                for i in stride(from: 0, to: items.count, by: 2) { d.set(items[i], items[i + 1]) }
            case 0x8F: try push(.object(try arena.object("builtins.set")))  // EMPTY_SET
            case 0x90:  // ADDITEMS: a set's items are dropped (sets never hold tensors worth naming)
                _ = try popMark()
                guard case let .object(o) = try top(), o.type == "builtins.set" else {
                    throw problem("adds set items to \(try top().kind), not a set")
                }
            case 0x91:  // FROZENSET
                _ = try popMark()
                try push(.object(try arena.object("builtins.frozenset")))
            case 0x68: try push(try recall(Int(try unsigned(1))))  // BINGET
            case 0x6A: try push(try recall(Int(try unsigned(4))))  // LONG_BINGET
            case 0x71: try memoize(Int(try unsigned(1)), try top())  // BINPUT
            case 0x72: try memoize(Int(try unsigned(4)), try top())  // LONG_BINPUT
            case 0x94: try memoize(memo.count, try top())  // MEMOIZE
            case 0x63:  // GLOBAL
                let module = try line(), name = try line()
                try push(try environment.global(module: module, name: name))
            case 0x93:  // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case let .string(m) = module, case let .string(n) = name else {
                    throw problem("names a global with \(module.kind) and \(name.kind) instead of two strings")
                }
                try push(try environment.global(module: m, name: n))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                guard case let .tuple(items, _) = args else { throw problem("calls \(callable.kind) with \(args.kind) as arguments") }
                try push(try environment.call(callable, items))
            case 0x81:  // NEWOBJ
                let args = try pop(), cls = try pop()
                guard case let .tuple(items, _) = args else { throw problem("creates \(cls.kind) with \(args.kind) as arguments") }
                try push(try environment.newObject(cls, items))
            case 0x92:  // NEWOBJ_EX: keyword arguments are not something tensor classes take
                let kwargs = try pop(), args = try pop(), cls = try pop()
                guard case let .tuple(items, _) = args, case let .dict(k) = kwargs, k.items.isEmpty else {
                    throw problem("creates \(cls.kind) with keyword arguments")
                }
                try push(try environment.newObject(cls, items))
            case 0x62:  // BUILD
                let state = try pop()
                switch try top() {
                case let .object(o):
                    o.state = state
                case .dict, .tensor:
                    // A state dict's `_metadata` attribute (module versions): nothing to keep.
                    break
                case let other:
                    throw problem("sets the state of \(other.kind), which has none")
                }
            case 0x51:  // BINPERSID
                try push(try environment.persistentLoad(try pop()))
            default:
                throw problem("uses the opcode \(Self.opcodeName(op)), which tensor files do not use and "
                    + "this reader does not run")
            }
        }
    }

    /// The name of an opcode, for the error that refuses it.
    static func opcodeName(_ op: UInt8) -> String {
        let names: [UInt8: String] = [
            0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT", 0x53: "STRING", 0x56: "UNICODE", 0x70: "PUT", 0x67: "GET",
            0x50: "PERSID", 0x69: "INST", 0x6F: "OBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
            0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
        ]
        let hex = "0x" + String(op, radix: 16, uppercase: true)
        return names[op].map { "\($0) (\(hex))" } ?? "\(hex) (unknown)"
    }
}
