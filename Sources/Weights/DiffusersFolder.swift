import Foundation

/// A model folder in diffusers' `save_pretrained` layout: `model_index.json` plus one folder per
/// component (unet/, vae/, text_encoder/, tokenizer/, scheduler/), each with its config and weights.
public struct DiffusersFolder: Sendable {
    public let url: URL
    public let modelIndex: ModelIndex

    /// Weight file names tried in order: full precision, then fp16 variants; then sharded indexes.
    public static let singleFileNames = [
        "diffusion_pytorch_model.safetensors", "model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
    ]
    public static let shardIndexNames = [
        "diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
        "diffusion_pytorch_model.safetensors.index.fp16.json", "model.safetensors.index.fp16.json",
        "diffusion_pytorch_model.fp16.safetensors.index.json", "model.fp16.safetensors.index.json",
    ]
    /// PyTorch weight files (`torch.save` archives, read by the restricted unpickler), tried only
    /// when no safetensors weights are present, as diffusers prefers safetensors too.
    public static let pickleFileNames = [
        "diffusion_pytorch_model.bin", "pytorch_model.bin", "model.bin",
        "diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin",
    ]
    public static let pickleShardIndexNames = [
        "diffusion_pytorch_model.bin.index.json", "pytorch_model.bin.index.json",
        "diffusion_pytorch_model.bin.index.fp16.json", "pytorch_model.bin.index.fp16.json",
    ]

    /// Opens the folder at `url`, which must contain a readable `model_index.json`.
    public init(url: URL) throws {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw WeightsError.notADiffusersFolder(path: path, problem: "it does not exist")
        }
        guard isDirectory.boolValue else {
            throw WeightsError.notADiffusersFolder(path: path, problem: "it is a file, not a folder")
        }
        let index = url.appendingPathComponent("model_index.json")
        guard FileManager.default.fileExists(atPath: index.path) else {
            throw WeightsError.notADiffusersFolder(path: path, problem: "it has no model_index.json")
        }
        self.url = url
        self.modelIndex = try ModelIndex.load(from: index)
    }

    /// The folder of component `name` (e.g. "unet"); an error if it does not exist.
    public func componentDirectory(_ name: String) throws -> URL {
        let directory = url.appendingPathComponent(name, isDirectory: true)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue {
            return directory
        }
        throw WeightsError.missingComponent(folder: url.path, component: name,
                                            listed: modelIndex.components[name]?.isPresent ?? false,
                                            available: modelIndex.presentComponents)
    }

    /// The component's configuration file: `config.json`, or `scheduler_config.json` for schedulers.
    public func configURL(for component: String) throws -> URL {
        let directory = try componentDirectory(component)
        let candidates = ["config.json", "scheduler_config.json"].map { directory.appendingPathComponent($0) }
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) {
            return found
        }
        throw WeightsError.invalidConfig(path: directory.path, key: nil,
                                         problem: "has neither config.json nor scheduler_config.json")
    }

    /// Decodes the component's configuration, e.g. `config(UNetConfig.self, for: "unet")`.
    public func config<C: JSONConfiguration>(_ type: C.Type, for component: String) throws -> C {
        try C.load(from: configURL(for: component))
    }

    /// The component's weights: a single safetensors file (full precision preferred over fp16)
    /// or a sharded checkpoint described by a `*.safetensors.index.json`; failing those, the same
    /// as PyTorch `.bin` files.
    public func weights(for component: String) throws -> WeightSet {
        try Self.weights(in: componentDirectory(component), label: component)
    }

    /// The weights in one component's folder (e.g. a VAE folder on its own), found as
    /// `weights(for:)` finds them.
    public static func weights(in directory: URL, label: String) throws -> WeightSet {
        let manager = FileManager.default
        for (singles, indexes) in [(singleFileNames, shardIndexNames), (pickleFileNames, pickleShardIndexNames)] {
            for name in singles {
                let file = directory.appendingPathComponent(name)
                if manager.fileExists(atPath: file.path) {
                    return try WeightSet(files: [SafeTensorsFile.open(file)], label: label)
                }
            }
            for name in indexes {
                let index = directory.appendingPathComponent(name)
                if manager.fileExists(atPath: index.path) { return try shardedWeights(index: index, label: label) }
            }
        }
        throw WeightsError.noWeights(directory: directory.path, lookedFor: singleFileNames + shardIndexNames
            + pickleFileNames + pickleShardIndexNames)
    }

    /// Opens the shards listed in a sharded checkpoint's index (`{"weight_map": {tensor: file}}`),
    /// safetensors or PyTorch files, and checks that each tensor is where the index says.
    public static func shardedWeights(index: URL, label: String) throws -> WeightSet {
        let path = index.path
        let bytes: [UInt8]
        do {
            bytes = Array(try Data(contentsOf: index))
        } catch {
            throw WeightsError.unreadable(path: path, reason: error.localizedDescription)
        }
        let json: JSON
        do {
            json = try JSON.parse(bytes)
        } catch {
            throw WeightsError.invalidShardIndex(path: path, problem: "is not valid JSON (\(error))")
        }
        guard case let .object(map)? = json["weight_map"] else {
            throw WeightsError.invalidShardIndex(path: path, problem: "has no \"weight_map\" object")
        }
        var shardOf: [String: String] = [:]
        for (tensor, value) in map {
            guard case let .string(file) = value, !file.contains("/"), !file.hasPrefix(".") else {
                throw WeightsError.invalidShardIndex(path: path, problem: "maps tensor \"\(tensor)\" to "
                    + "\(value.brief), which is not a file name in the same folder")
            }
            shardOf[tensor] = file
        }
        let directory = index.deletingLastPathComponent()
        let shardNames = Set(shardOf.values).sorted()
        var files: [SafeTensorsFile] = []
        for name in shardNames {
            let shard = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: shard.path) else {
                throw WeightsError.invalidShardIndex(path: path, problem: "lists the shard \(name) but "
                    + "\(shard.path) is missing; download it again")
            }
            files.append(try SafeTensorsFile.open(shard))
        }
        let byName = Dictionary(uniqueKeysWithValues: zip(shardNames, files))
        for (tensor, name) in shardOf where !(byName[name]?.contains(tensor) ?? false) {
            throw WeightsError.invalidShardIndex(path: path, problem: "says tensor \"\(tensor)\" is in "
                + "\(name) but that file does not contain it")
        }
        return try WeightSet(files: files, label: label)
    }
}
