import Foundation

/// Everything that can go wrong while reading or writing model files. Each message is meant for the
/// person running the program: it says what is wrong, where (file, tensor, key) and what to do.
public enum WeightsError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    /// A file could not be opened, mapped or read at all.
    case unreadable(path: String, reason: String)
    /// A weight file whose overall structure is broken (a safetensors header; a PyTorch file's zip
    /// archive, pickle or storages), or that holds something this reader does not take.
    case corruptFile(path: String, problem: String)
    /// A PyTorch pickle names a global (class or function) outside the allow-list of tensor files.
    case forbiddenGlobal(path: String, global: String)
    /// One entry of a safetensors header is invalid (dtype, shape or byte range).
    case corruptTensor(path: String, tensor: String, problem: String)
    /// A tensor was asked for in a dtype it cannot be read as (e.g. integers from F32 data).
    case wrongDType(path: String, tensor: String, dtype: String, expected: String)
    /// A weight set has no tensor of that name.
    case missingTensor(set: String, tensor: String, files: [String], hint: String?)
    /// A tensor's stored shape is not the one the configuration implies.
    case shapeMismatch(set: String, tensor: String, file: String, stored: [Int], expected: [Int])
    /// A JSON configuration file could not be decoded; `key` is the offending key path, if known.
    case invalidConfig(path: String, key: String?, problem: String)
    /// A folder that is not a diffusers model folder.
    case notADiffusersFolder(path: String, problem: String)
    /// A component (unet, vae, …) that the model folder does not provide.
    case missingComponent(folder: String, component: String, listed: Bool, available: [String])
    /// No weight file of any known kind was found for a component.
    case noWeights(directory: String, lookedFor: [String])
    /// A sharded checkpoint's index file is inconsistent with the shards on disk.
    case invalidShardIndex(path: String, problem: String)
    /// Writing a file failed; the destination was left untouched.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "\(path): cannot read the file (\(reason))"
        case let .corruptFile(path, problem):
            return "\(path): \(problem)"
        case let .corruptTensor(path, tensor, problem):
            return "\(path): tensor \"\(tensor)\" \(problem)"
        case let .forbiddenGlobal(path, global):
            return "\(path): refuses the global \(global): the file's pickle asks to import it, and loading "
                + "it that way could run code. Only what tensor files need is read (tensor rebuilds, storages, "
                + "OrderedDict, …); nothing was imported or run. If you trust the file, convert it to "
                + "safetensors with PyTorch (torch.load, then safetensors.torch.save_file)"
        case let .wrongDType(path, tensor, dtype, expected):
            return "\(path): tensor \"\(tensor)\" is stored as \(dtype) but \(expected) was expected"
        case let .missingTensor(set, tensor, files, hint):
            let where_ = files.isEmpty ? "an empty weight set" : files.joined(separator: ", ")
            var text = "\(set): no tensor \"\(tensor)\" in \(where_)"
            if let hint { text += "; \(hint)" }
            return text
        case let .shapeMismatch(set, tensor, file, stored, expected):
            return "\(set): tensor \"\(tensor)\" in \(file) has shape \(stored) but the config expects "
                + "\(expected); the config.json does not match these weights"
        case let .invalidConfig(path, key, problem):
            if let key { return "\(path): key \"\(key)\" \(problem)" }
            return "\(path): \(problem)"
        case let .notADiffusersFolder(path, problem):
            return "\(path) is not a diffusers model folder: \(problem). Expected a folder as written by "
                + "diffusers' save_pretrained, with model_index.json, unet/, vae/, text_encoder/, "
                + "tokenizer/ and scheduler/"
        case let .missingComponent(folder, component, listed, available):
            let dir = (folder as NSString).appendingPathComponent(component)
            if listed {
                return "model folder \(folder): component '\(component)' is listed in model_index.json "
                    + "but \(dir)/ is missing; download or copy that folder again"
            }
            let list = available.isEmpty ? "none" : available.joined(separator: ", ")
            return "model folder \(folder): has no component '\(component)' (model_index.json lists: "
                + "\(list)) and \(dir)/ does not exist"
        case let .noWeights(directory, lookedFor):
            return "\(directory): no weights found; looked for \(lookedFor.joined(separator: ", "))"
        case let .invalidShardIndex(path, problem):
            return "\(path): \(problem)"
        case let .writeFailed(path, reason):
            return "\(path): could not write the file (\(reason)); nothing was changed at that path"
        }
    }

    public var errorDescription: String? { description }
}
