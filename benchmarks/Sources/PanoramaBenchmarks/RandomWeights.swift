import Foundation
import Tensors
import Weights

/// A full-size SD 1.5 diffusers folder with seeded random fp16 weights, written once to a cache
/// directory from the committed configs and tensor listing in `benchmarks/sd15/`.
///
/// Every tensor named in `sd15/parameters.json` (diffusers' / transformers' `state_dict` names and
/// shapes for these configs) is filled from its own SplitMix64 stream, seeded with the FNV-1a hash
/// of "<seed>/<component>/<name>", so the folder is byte-for-byte reproducible:
/// rank-1 `.weight` tensors (GroupNorm / LayerNorm scales) are 1, biases are 0, everything else is
/// uniform with standard deviation 0.02 (±0.02·√3), which keeps activations finite and O(1).
enum RandomWeights {
    /// Bump when the filling rule changes, so stale caches are regenerated.
    static let version = 1
    static let seed: UInt64 = 1234
    static let components = [("unet", "diffusion_pytorch_model.safetensors"),
                             ("vae", "diffusion_pytorch_model.safetensors"),
                             ("text_encoder", "model.safetensors")]
    static let stampName = "random-weights.json"

    /// The folder at `cache`, generated from `layout` (benchmarks/sd15) unless already present.
    static func ensure(cache: URL, layout: URL) throws -> URL {
        let manager = FileManager.default
        let stamp = cache.appendingPathComponent(stampName)
        let expected = stampText()
        if let text = try? String(contentsOf: stamp, encoding: .utf8), text == expected { return cache }

        log("writing the random-weight SD 1.5 folder to \(cache.path) (once; ~2.1 GB fp16)")
        let t0 = now()
        let staging = cache.deletingLastPathComponent()
            .appendingPathComponent(".\(cache.lastPathComponent).\(getpid()).tmp")
        try? manager.removeItem(at: staging)
        try manager.createDirectory(at: staging, withIntermediateDirectories: true)
        for file in ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                     "scheduler/scheduler_config.json", "tokenizer/merges.txt", "tokenizer/vocab.json",
                     "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json"] {
            let target = staging.appendingPathComponent(file)
            try manager.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try manager.copyItem(at: layout.appendingPathComponent(file), to: target)
        }
        let listing = try parameterListing(layout)
        for (component, fileName) in components {
            guard let entries = listing[component] else {
                throw BenchmarkError("sd15/parameters.json has no \"\(component)\" listing")
            }
            let tensors = entries.map { (name: $0.name, tensor: randomTensor(component, $0.name, $0.shape)) }
            try SafeTensorsWriter.write(tensors, dtype: .f16, metadata: ["format": "pt"],
                                        to: staging.appendingPathComponent(component).appendingPathComponent(fileName))
            log("  \(component): \(entries.count) tensors, \(entries.reduce(0) { $0 + $1.shape.reduce(1, *) }) parameters")
        }
        try expected.write(to: staging.appendingPathComponent(stampName), atomically: true, encoding: .utf8)
        try? manager.removeItem(at: cache)
        try manager.createDirectory(at: cache.deletingLastPathComponent(), withIntermediateDirectories: true)
        try manager.moveItem(at: staging, to: cache)
        log(String(format: "  done in %.1f s", now() - t0))
        return cache
    }

    static func stampText() -> String {
        "{\"version\": \(version), \"seed\": \(seed), \"rule\": \"norm scales 1, biases 0, others uniform std 0.02\", \"dtype\": \"F16\"}\n"
    }

    /// `sd15/parameters.json`: component → [(name, shape)] in state_dict order.
    static func parameterListing(_ layout: URL) throws -> [String: [(name: String, shape: [Int])]] {
        let data = try Data(contentsOf: layout.appendingPathComponent("parameters.json"))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: [[Any]]] else {
            throw BenchmarkError("sd15/parameters.json is not {component: [[name, shape], …]}")
        }
        return try object.mapValues { entries in
            try entries.map { e in
                guard e.count == 2, let name = e[0] as? String, let shape = e[1] as? [Int] else {
                    throw BenchmarkError("sd15/parameters.json: bad entry \(e)")
                }
                return (name, shape)
            }
        }
    }

    /// `lcm-shaped-lora.safetensors` in the cache, written once: a kohya LoRA over every module of
    /// `unet` that LCM-LoRA for SD 1.5 changes (attention, feed-forward, proj_in/out, resnet
    /// convolutions, time_emb_proj, conv_shortcut, down/up-samplers), rank 64, alpha 64, fp16.
    static func ensureLCMShapedLoRA(cache: URL, unet: WeightSet) throws -> URL {
        let url = cache.appendingPathComponent("lcm-shaped-lora.safetensors")
        if FileManager.default.fileExists(atPath: url.path) { return url }
        let kinds = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
                     "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"]
        let rank = 64
        var tensors: [(name: String, tensor: Tensor)] = []
        for name in unet.names where kinds.contains(where: { name.hasSuffix("." + $0 + ".weight") }) {
            guard let shape = unet.shape(of: name) else { continue }
            let key = "lora_unet_" + name.dropLast(".weight".count).replacingOccurrences(of: ".", with: "_")
            tensors.append((key + ".lora_down.weight", randomTensor("lora", key + ".down", [rank] + shape.dropFirst())))
            tensors.append((key + ".lora_up.weight", randomTensor("lora", key + ".up", shape.count == 4 ? [shape[0], rank, 1, 1] : [shape[0], rank])))
            tensors.append((key + ".alpha", Tensor(shape: [], data: [Float(rank)])))
        }
        try SafeTensorsWriter.write(tensors, dtype: .f16, to: url)
        return url
    }

    /// `taesd/` in the cache, written once: a full-size TAESD (diffusers' `AutoencoderTiny`
    /// defaults, `sd15/taesd/config.json`) with the same filling rule, for the tiny-decoder rows.
    static func ensureTAESD(cache: URL, layout: URL) throws -> URL {
        let folder = cache.appendingPathComponent("taesd")
        let weights = folder.appendingPathComponent("diffusion_pytorch_model.safetensors")
        if FileManager.default.fileExists(atPath: weights.path) { return folder }
        guard let entries = try parameterListing(layout)["taesd"] else {
            throw BenchmarkError("sd15/parameters.json has no \"taesd\" listing")
        }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: folder.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: layout.appendingPathComponent("taesd/config.json"),
                                         to: folder.appendingPathComponent("config.json"))
        let tensors = entries.map { (name: $0.name, tensor: randomTensor("taesd", $0.name, $0.shape)) }
        try SafeTensorsWriter.write(tensors, dtype: .f16, metadata: ["format": "pt"], to: weights)
        return folder
    }

    static func randomTensor(_ component: String, _ name: String, _ shape: [Int]) -> Tensor {
        if shape.count == 1 && name.hasSuffix(".weight") { return Tensor(repeating: 1, shape: shape) }
        if name.hasSuffix(".bias") { return Tensor(zeros: shape) }
        var state = fnv1a("\(seed)/\(component)/\(name)")
        let scale = Float(0.02 * 3.0.squareRoot()) / Float(1 << 31)
        return Tensor(uninitializedShape: shape) { out in
            var i = 0
            while i < out.count {
                let r = splitMix64(&state)
                out[i] = Float(Int32(truncatingIfNeeded: r)) * scale
                if i + 1 < out.count { out[i + 1] = Float(Int32(truncatingIfNeeded: r >> 32)) * scale }
                i += 2
            }
        }
    }

    @inline(__always)
    static func splitMix64(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in s.utf8 { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return h
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
