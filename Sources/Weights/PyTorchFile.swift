/// A storage of a PyTorch file: one stored zip entry `<root>/data/<key>` of `dtype` elements.
struct PickleStorage {
    var key: String
    /// nil for a storage type this reader cannot convert (named by `typeName`).
    var dtype: DType?
    var typeName: String
    /// The entry's bytes in the mapped file.
    var bytes: Range<Int>
}

/// A tensor rebuilt from a pickle: where its elements lie, not yet validated against the storage.
struct PickleTensor {
    var dtype: DType
    var shape: [Int]
    /// Element strides, as torch gives them.
    var strides: [Int]
    /// Byte range of the whole tensor when it is contiguous, or else the span its elements lie in.
    var byteRange: Range<Int>
    var isContiguous: Bool
}

/// Reads PyTorch's `torch.save` format (1.6 and later): a zip archive holding `<root>/data.pkl` (a
/// pickle of the saved object) and one stored entry per tensor storage. The pickle runs on
/// `Unpickler` with `TorchPickle`'s allow-list, which never imports or runs anything; tensors
/// become byte ranges of the mapped file, so loading is as lazy as a safetensors file's.
enum PyTorchFile {
    struct Contents {
        var entries: [String: TensorInfo]
        /// Element strides of the tensors that are not contiguous (gathered when read).
        var strides: [String: [Int]]
        var metadata: [String: String]
    }

    /// The first bytes of the pre-1.6 format: a pickled magic number (0x1950a86a20f9469cfc6c).
    static let legacyMagic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> Contents {
        let archive = try ZipArchive(bytes, path: path)
        // torch names the archive's top folder after the file it saved to ("archive" for a
        // buffer): the one folder holding data.pkl.
        let pickles = archive.entries.filter {
            $0.name.hasSuffix("/data.pkl") && $0.name.dropLast("/data.pkl".count).firstIndex(of: "/") == nil
        }
        guard pickles.count == 1 else {
            throw WeightsError.corruptFile(path: path, problem: pickles.isEmpty
                ? "is a zip archive without a data.pkl, so not a PyTorch file (torch.save writes <name>/data.pkl)"
                : "is a zip archive with \(pickles.count) data.pkl entries; a PyTorch file has one")
        }
        let pickle = pickles[0]
        let root = String(pickle.name.dropLast("data.pkl".count))
        if let order = archive.entry(root + "byteorder") {
            // At most 20 bytes are decoded: the entry's size is the file's to choose.
            let shown = order.data.lowerBound..<(order.data.lowerBound + min(20, order.data.count))
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[shown]), as: UTF8.self)
            guard text == "little", order.data.count == 6 else {
                throw WeightsError.corruptFile(path: path, problem: "stores its tensors in \"\(text)\" "
                    + "byte order; only little-endian files are read (save it on a little-endian machine)")
            }
        }
        let arena = PickleArena(path: path)
        let environment = TorchPickle(archive: archive, root: root, path: path, arena: arena)
        let value = try Unpickler.load(UnsafeRawBufferPointer(rebasing: bytes[pickle.data]), path: path,
                                       entry: pickle.name, environment: environment, arena: arena)
        var flattener = Flattener(path: path)
        try flattener.add(value, name: "", depth: 0)
        return Contents(entries: flattener.entries, strides: flattener.strides, metadata: flattener.metadata)
    }

    /// Nested dicts (and lists, and ParameterDicts) become dotted names: `{'state_dict': {'a.b': t}}`
    /// → `state_dict.a.b`. Scalars become metadata; anything else is skipped.
    private struct Flattener {
        static let maxDepth = 100
        /// Total nodes visited: shared sub-structures could otherwise be walked exponentially often.
        static let maxVisits = 1_000_000

        let path: String
        var entries: [String: TensorInfo] = [:]
        var strides: [String: [Int]] = [:]
        var metadata: [String: String] = [:]
        var visits = 0
        var onPath = Set<ObjectIdentifier>()

        /// Longest dotted name: keys repeated through the memo could otherwise build gigabyte names.
        static let maxNameBytes = 4096

        private func join(_ prefix: String, _ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }

        mutating func add(_ value: PickleValue, name: String, depth: Int) throws {
            visits += 1
            guard name.utf8.count <= Self.maxNameBytes else {
                throw WeightsError.corruptFile(path: path, problem: "has a key path longer than \(Self.maxNameBytes) "
                    + "bytes (\"\(name.prefix(60))…\"); a tensor file does not")
            }
            guard depth <= Self.maxDepth, visits <= Self.maxVisits else {
                throw WeightsError.corruptFile(path: path, problem: depth > Self.maxDepth
                    ? "nests its containers deeper than \(Self.maxDepth) levels (at \"\(name)\"); a tensor file does not"
                    : "refers to the same containers over \(Self.maxVisits) times; a tensor file does not")
            }
            switch value {
            case let .tensor(t):
                guard entries[name] == nil else {
                    throw WeightsError.corruptTensor(path: path, tensor: name, problem: "appears twice (the file "
                        + "has two tensors that flatten to this name)")
                }
                entries[name] = TensorInfo(name: name, dtype: t.dtype, shape: t.shape, byteRange: t.byteRange)
                if !t.isContiguous { strides[name] = t.strides }
            case let .dict(d):
                try enter(d) {
                    for (key, item) in d.items {
                        let part: String
                        switch key {
                        case let .string(s): part = s
                        case let .int(i): part = String(i)
                        case let .global(g): part = g  // PyTorch Lightning keyed callbacks by class
                        default: continue
                        }
                        try $0.add(item, name: $0.join(name, part), depth: depth + 1)
                    }
                }
            case let .list(l):
                try enter(l) {
                    for (i, item) in l.items.enumerated() { try $0.add(item, name: $0.join(name, String(i)), depth: depth + 1) }
                }
            case let .tuple(items, _):
                for (i, item) in items.enumerated() { try add(item, name: join(name, String(i)), depth: depth + 1) }
            case let .object(o):
                // A ParameterDict (old textual-inversion files' string_to_param) holds its tensors
                // in `_parameters`; they take the dict's own name, as A1111 reads them.
                guard o.type == "torch.nn.modules.container.ParameterDict", case let .dict(state)? = o.state,
                      let parameters = state.items.first(where: {
                          if case .string("_parameters") = $0.key { return true } else { return false }
                      })?.value else { return }
                try enter(o) { try $0.add(parameters, name: name, depth: depth + 1) }
            case let .string(s) where !name.isEmpty: metadata[name] = s
            case let .int(i) where !name.isEmpty: metadata[name] = String(i)
            case let .float(x) where !name.isEmpty: metadata[name] = String(x)
            case let .bool(b) where !name.isEmpty: metadata[name] = b ? "True" : "False"
            default:
                break
            }
        }

        /// Runs `body` with `box` marked as being walked; a box inside itself is an error.
        private mutating func enter(_ box: AnyObject, _ body: (inout Flattener) throws -> Void) throws {
            let id = ObjectIdentifier(box)
            guard onPath.insert(id).inserted else {
                throw WeightsError.corruptFile(path: path, problem: "has a container that contains itself; a "
                    + "tensor file does not")
            }
            try body(&self)
            onPath.remove(id)
        }
    }
}

/// The allow-list: the only globals a tensor file may name, and what "calling" each means. Every
/// global is answered by name from these tables; none is imported, nothing is executed.
final class TorchPickle: PickleEnvironment {
    private enum Global {
        case rebuildTensor(version: Int)
        case rebuildParameter(withState: Bool)
        case rebuildFromType
        case storageType(DType?)
        case dtype(DType?)
        case orderedDict
        case size
        /// A class or function whose result is kept as an opaque object (never constructed for real).
        case opaque
        /// A class that is only ever named (as `_rebuild_from_type_v2`'s type), never built directly.
        case tensorClass
    }

    private static let storageTypes: [String: DType?] = [
        "FloatStorage": .f32, "DoubleStorage": .f64, "HalfStorage": .f16, "BFloat16Storage": .bf16,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool, "UntypedStorage": .u8,
        "ComplexFloatStorage": nil, "ComplexDoubleStorage": nil, "QInt8Storage": nil, "QUInt8Storage": nil,
        "QInt32Storage": nil, "QUInt4x2Storage": nil, "QUInt2x4Storage": nil,
    ]

    private static let dtypes: [String: DType?] = [
        "float32": .f32, "float": .f32, "float64": .f64, "double": .f64, "float16": .f16, "half": .f16,
        "bfloat16": .bf16, "int64": .i64, "long": .i64, "int32": .i32, "int": .i32, "int16": .i16,
        "short": .i16, "int8": .i8, "uint8": .u8, "bool": .bool,
        "uint16": nil, "uint32": nil, "uint64": nil, "complex64": nil, "complex128": nil, "complex32": nil,
        "float8_e4m3fn": nil, "float8_e5m2": nil, "float8_e4m3fnuz": nil, "float8_e5m2fnuz": nil,
        "qint8": nil, "quint8": nil, "qint32": nil,
    ]

    /// The rest of the list, after A1111's `modules/safe.py`: what real SD checkpoints, VAEs and
    /// embeddings carry besides tensors (PyTorch Lightning's checkpoint callback in SD 1.x `.ckpt`
    /// files, numpy scalars in training state, ParameterDicts in old embeddings).
    private static let others: [String: Global] = [
        "torch._utils._rebuild_tensor": .rebuildTensor(version: 1),
        "torch._utils._rebuild_tensor_v2": .rebuildTensor(version: 2),
        "torch._utils._rebuild_tensor_v3": .rebuildTensor(version: 3),
        "torch._utils._rebuild_parameter": .rebuildParameter(withState: false),
        "torch._utils._rebuild_parameter_with_state": .rebuildParameter(withState: true),
        "torch._tensor._rebuild_from_type_v2": .rebuildFromType,
        "torch.Tensor": .tensorClass, "torch._tensor.Tensor": .tensorClass, "torch.nn.parameter.Parameter": .tensorClass,
        "collections.OrderedDict": .orderedDict, "typing.OrderedDict": .orderedDict,
        "torch.Size": .size,
        "torch.nn.modules.container.ParameterDict": .opaque,
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": .opaque,
        "pytorch_lightning.callbacks.model_checkpoint": .opaque,
        "builtins.set": .opaque, "__builtin__.set": .opaque, "builtins.frozenset": .opaque,
        "numpy.core.multiarray.scalar": .opaque, "numpy.core.multiarray._reconstruct": .opaque,
        "numpy._core.multiarray.scalar": .opaque, "numpy._core.multiarray._reconstruct": .opaque,
        "numpy.dtype": .opaque, "numpy.ndarray": .opaque,
        "_codecs.encode": .opaque,
    ]

    /// Dimensions of a tensor (PyTorch itself stops at 64 for most operations); bounds the gather's recursion.
    static let maxDimensions = 64
    /// Elements of a non-contiguous tensor beyond its storage's size (an expanded view).
    static let maxExpandedElements = 1 << 24

    private let archive: ZipArchive
    private let root: String
    private let path: String
    /// Storages by key: each persistent id repeats for every tensor that views the storage.
    private var storages: [String: PickleStorage] = [:]

    /// Owns the boxes this environment creates (OrderedDicts, opaque objects), like the unpickler's.
    private let arena: PickleArena

    init(archive: ZipArchive, root: String, path: String, arena: PickleArena) {
        self.archive = archive
        self.root = root
        self.path = path
        self.arena = arena
    }

    private func lookup(_ qualified: String) -> Global? {
        if let g = Self.others[qualified] { return g }
        guard qualified.hasPrefix("torch."), !qualified.dropFirst(6).contains(".") else { return nil }
        let name = String(qualified.dropFirst(6))
        if let s = Self.storageTypes[name] { return .storageType(s) }
        if let d = Self.dtypes[name] { return .dtype(d) }
        return nil
    }

    private func fail(_ problem: String) -> WeightsError { .corruptFile(path: path, problem: problem) }

    func global(module: String, name: String) throws -> PickleValue {
        let qualified = module + "." + name
        guard lookup(qualified) != nil else { throw WeightsError.forbiddenGlobal(path: path, global: qualified) }
        return .global(qualified)
    }

    func call(_ callable: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard case let .global(name) = callable, let global = lookup(name) else {
            throw fail("has a pickle that calls \(callable.kind), which is not a function")
        }
        switch global {
        case let .rebuildTensor(version):
            return .tensor(try rebuildTensor(args, version: version, caller: name))
        case let .rebuildParameter(withState):
            guard args.count == (withState ? 4 : 3), case .tensor = args[0] else {
                throw fail("has a pickle that calls \(name) with \(args.count) arguments (\(args.first?.kind ?? "none") first); "
                    + "expected a tensor and \(withState ? 3 : 2) more")
            }
            return args[0]
        case .rebuildFromType:
            // (function, type, args, state): a tensor subclass or a tensor with Python attributes.
            guard args.count == 4, case let .global(type) = args[1], case .tensorClass? = lookup(type),
                  case let .tuple(inner, _) = args[2] else {
                throw fail("has a pickle that calls \(name) with arguments other than (function, tensor type, "
                    + "arguments, state)")
            }
            return try call(args[0], inner)
        case .orderedDict:
            // OrderedDict() then SETITEMS; OrderedDict(pairs) is not how pickle writes one.
            guard args.isEmpty else { throw fail("has a pickle that builds an OrderedDict from arguments") }
            return .dict(try arena.dict())
        case .size:
            guard args.count == 1, case let .tuple(items, _) = args[0], items.allSatisfy({ if case .int = $0 { true } else { false } }) else {
                throw fail("has a pickle that builds a torch.Size from something other than a tuple of ints")
            }
            return args[0]
        case .opaque:
            return .object(try arena.object(name))
        case .storageType, .dtype, .tensorClass:
            throw fail("has a pickle that constructs \(name) directly; tensor files never do")
        }
    }

    func newObject(_ cls: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard case let .global(name) = cls, case .opaque? = lookup(name) else {
            throw fail("has a pickle that creates an instance of \(cls.kind), which this reader does not build")
        }
        return .object(try arena.object(name))
    }

    func persistentLoad(_ id: PickleValue) throws -> PickleValue {
        // ('storage', storage type, key, location, number of elements)
        guard case let .tuple(items, _) = id, items.count == 5, case .string("storage") = items[0],
              case let .global(typeName) = items[1], case let .storageType(dtype)? = lookup(typeName),
              case let .string(key) = items[2], case let .int(count) = items[4], count >= 0 else {
            throw fail("has a pickle with a persistent id that is not ('storage', storage type, key, location, "
                + "size): \(id.kind)")
        }
        if let known = storages[key] {
            guard known.typeName == typeName else {
                throw fail("has a pickle that reads storage \(key) once as \(known.typeName), once as \(typeName)")
            }
            return .storage(known)
        }
        guard let entry = archive.entry(root + "data/" + key) else {
            throw fail("has a pickle that refers to storage \(key), but the archive has no \(root)data/\(key)")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype?.size ?? 1)
        guard dtype == nil || (!overflow && bytes == entry.data.count) else {
            throw fail("declares storage \(key) as \(count) elements of \(typeName) (\(overflow ? "too many" : String(bytes)) "
                + "bytes), but \(entry.name) holds \(entry.data.count) bytes; the file is truncated or corrupt")
        }
        let storage = PickleStorage(key: key, dtype: dtype, typeName: typeName, bytes: entry.data)
        storages[key] = storage
        return .storage(storage)
    }

    /// `_rebuild_tensor(storage, offset, size, stride)`, `_v2(…, requires_grad, hooks[, metadata])`
    /// and `_v3(…, requires_grad, hooks, dtype[, metadata])`: checks that every element the size and
    /// stride reach lies inside the storage.
    private func rebuildTensor(_ args: [PickleValue], version: Int, caller: String) throws -> PickleTensor {
        let expected = version == 1 ? 4...4 : version == 2 ? 6...7 : 7...8
        guard expected.contains(args.count), case let .storage(storage) = args[0], case let .int(offset) = args[1],
              case let .tuple(sizeItems, _) = args[2], case let .tuple(strideItems, _) = args[3] else {
            throw fail("has a pickle that calls \(caller) with arguments other than (storage, offset, size, stride, …)")
        }
        func ints(_ items: [PickleValue]) -> [Int]? {
            var out: [Int] = []
            for item in items {
                guard case let .int(i) = item, i >= 0 else { return nil }
                out.append(i)
            }
            return out
        }
        let key = storage.key
        guard sizeItems.count <= Self.maxDimensions else {
            throw fail("has a tensor on storage \(key) with \(sizeItems.count) dimensions; at most \(Self.maxDimensions) are read")
        }
        guard let shape = ints(sizeItems), let strides = ints(strideItems), shape.count == strides.count, offset >= 0 else {
            throw fail("has a tensor on storage \(key) whose offset, size or stride is not non-negative integers "
                + "of one length (size \(sizeItems.count) items, stride \(strideItems.count))")
        }
        var dtype = storage.dtype
        var typeName = storage.typeName
        if version == 3 {
            guard case let .global(name) = args[6], case let .dtype(d)? = lookup(name) else {
                throw fail("has a pickle that calls \(caller) without a torch dtype")
            }
            dtype = d
            typeName = name
        }
        guard let dtype else {
            throw fail("stores tensors of type \(typeName), which is not supported (supported: float32, float16, "
                + "bfloat16, float64, int64, int32, int16, int8, uint8, bool)")
        }
        // Elements reached: offset + Σ (size_i − 1) · stride_i, all checked for overflow.
        var count = 1, last = offset, overflow = false
        for (n, s) in zip(shape, strides) {
            var o = false
            (count, o) = count.multipliedReportingOverflow(by: n); overflow = overflow || o
            if n > 0 {
                let (step, o1) = (n - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(step)
                last = sum
                overflow = overflow || o1 || o2
            }
        }
        let size = dtype.size
        let available = storage.bytes.count / size
        guard !overflow else {
            throw fail("has a tensor of shape \(shape) on storage \(key) whose size overflows; the file is corrupt")
        }
        guard count == 0 || last < available else {
            throw fail("has a tensor of shape \(shape), stride \(strides) at offset \(offset) that reaches element "
                + "\(last) of storage \(key), which holds \(available) \(dtype.rawValue) elements; the file is corrupt")
        }
        // Contiguous: row-major strides wherever a dimension has more than one element (torch ignores
        // the stride of a size-1 dimension too).
        // (No dimension is 0 when count > 0, so the running product stays below count.)
        var contiguous = true, expectedStride = 1
        if count > 0 {
            for (n, s) in zip(shape, strides).reversed() where n != 1 {
                if s != expectedStride { contiguous = false }
                expectedStride *= n
            }
        }
        // A view that repeats elements (stride 0, as `expand` makes) can claim far more elements than
        // its storage holds; it is gathered into memory when read, so its size is bounded.
        guard contiguous || count <= max(available, Self.maxExpandedElements) else {
            throw fail("has a tensor of shape \(shape), stride \(strides) with \(count) elements over storage \(key) of "
                + "\(available) elements; views that repeat elements are read up to \(Self.maxExpandedElements) elements "
                + "(save it with .contiguous())")
        }
        let start = storage.bytes.lowerBound + (count == 0 ? 0 : offset * size)
        let span = count == 0 ? 0 : contiguous ? count : last - offset + 1
        return PickleTensor(dtype: dtype, shape: shape, strides: strides, byteRange: start..<(start + span * size),
                            isContiguous: contiguous || count == 0)
    }
}
