import ArgumentParser
import Foundation
import Imaging
import Renderer

/// `panorama info`: the generation parameters a PNG carries.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the generation parameters in a PNG (this program's, AUTOMATIC1111's, ComfyUI's).",
        discussion: """
            Reads the "parameters" text (AUTOMATIC1111's format, which this program writes too) \
            with A1111's own rules: the prompt, "Negative prompt:", and the last line's fields, \
            JSON-quoted values unquoted. Also shows the "regions" of `panorama compose`, and for \
            ComfyUI pictures what their "prompt" graph holds: node classes, sampler settings, \
            the prompts wired to each sampler, checkpoints and sizes. The image is not decoded.

            Examples:
              panorama info panorama-2048x512-42.png
              panorama info --json picture.png
            """)

    @Argument(help: ArgumentHelp("The PNG to read.", valueName: "file.png"))
    var file: String

    @Flag(name: .long, help: "Print one JSON object: prompt, negative_prompt, parameters {key: value}, the parsed numbers, regions, comfyui.")
    var json = false

    func run() throws {
        let url = URL(fileURLWithPath: (file as NSString).expandingTildeInPath)
        let chunks: [String: String]
        do { chunks = try PNG.textChunks(of: url) } catch { throw ValidationError("\(error)") }
        let infotext = chunks["parameters"].map(Infotext.init(parsing:))
        let regions = chunks["regions"].flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [[String: Any]] }
        let comfy = chunks["prompt"].flatMap(ComfyGraph.init(json:))
        let workflowNodes = chunks["workflow"].flatMap(Self.workflowNodeCount)
        guard infotext != nil || comfy != nil else {
            let found = chunks.keys.sorted()
            throw ValidationError("\(url.path) has no generation parameters: no \"parameters\" text chunk (AUTOMATIC1111, this program) and no ComfyUI \"prompt\" graph"
                + (found.isEmpty ? "; it has no text chunks at all" : "; its text chunks: \(found.joined(separator: ", "))"))
        }
        if json {
            var object: [String: Any] = ["file": url.path]
            if let infotext { object.merge(Self.jsonObject(infotext)) { $1 } }
            if let regions { object["regions"] = regions }
            if let comfy { object["comfyui"] = comfy.jsonObject(workflowNodes: workflowNodes) }
            let others = chunks.keys.filter { !["parameters", "regions", "prompt", "workflow"].contains($0) }.sorted()
            if !others.isEmpty { object["other_text_chunks"] = others }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if let infotext {
            print("Prompt: \(infotext.prompt)")
            print("Negative prompt: \(infotext.negativePrompt)")
            for field in infotext.fields { print("\(field.key): \(field.value)") }
        }
        if let regions {
            print("Regions (compose):")
            for (i, region) in regions.enumerated() {
                let place = (region["rect"] as? [Any]).map { "rect \($0.map { "\($0)" }.joined(separator: ","))" }
                    ?? (region["mask"] as? String).map { "mask \($0)" } ?? "?"
                var line = "  \(i + 1). \(place): \(region["prompt"] as? String ?? "")"
                if let negative = region["negative_prompt"] as? String { line += " (negative: \(negative))" }
                for key in ["guidance", "weight", "feather"] { if let v = region[key] { line += ", \(key) \(v)" } }
                print(line)
            }
        } else if chunks["regions"] != nil {
            print("Regions: the \"regions\" chunk is not a JSON list of regions")
        }
        if let comfy { print(comfy.summary(workflowNodes: workflowNodes)) }
    }

    /// prompt, negative_prompt, parameters and the numbers A1111's fields give.
    static func jsonObject(_ infotext: Infotext) -> [String: Any] {
        var parameters: [String: String] = [:]
        for field in infotext.fields { parameters[field.key] = field.value }
        var object: [String: Any] = ["prompt": infotext.prompt, "negative_prompt": infotext.negativePrompt,
                                     "parameters": parameters]
        // each number on its own, so one unreadable field does not hide the others
        let a1111 = infotext.a1111Parameters
        if let w = a1111["Size-1"].flatMap({ Int($0) }), let h = a1111["Size-2"].flatMap({ Int($0) }) {
            object["width"] = w
            object["height"] = h
        }
        if let seed = infotext["Seed"].flatMap({ UInt64($0) }) { object["seed"] = seed }
        if let steps = infotext["Steps"].flatMap({ Int($0) }) { object["steps"] = steps }
        if let cfg = infotext["CFG scale"].flatMap({ Double($0) }) { object["cfg_scale"] = cfg }
        if let sampler = infotext["Sampler"] { object["sampler"] = sampler }
        if let recalled = try? infotext.recalledSettings(), let sampler = try? recalled.sampler() {
            object["scheduler"] = sampler.rawValue
        }
        return object
    }

    /// The number of nodes in a ComfyUI `workflow` chunk (the editor's graph), nil if unreadable.
    static func workflowNodeCount(_ text: String) -> Int? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let nodes = object["nodes"] as? [Any] else { return nil }
        return nodes.count
    }
}

/// What a ComfyUI `prompt` chunk (the executed node graph: `{id: {class_type, inputs}}`) holds.
struct ComfyGraph {
    struct Node {
        let id: String
        let classType: String
        let inputs: [String: Any]
    }

    let nodes: [String: Node]

    init?(json text: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        var nodes: [String: Node] = [:]
        for (id, value) in object {
            guard let node = value as? [String: Any], let classType = node["class_type"] as? String else { continue }
            nodes[id] = Node(id: id, classType: classType, inputs: node["inputs"] as? [String: Any] ?? [:])
        }
        guard !nodes.isEmpty else { return nil }
        self.nodes = nodes
    }

    /// Node ids in numeric order where they are numbers.
    var orderedIDs: [String] {
        nodes.keys.sorted { (Int($0) ?? .max, $0) < (Int($1) ?? .max, $1) }
    }

    var classCounts: [String: Int] {
        nodes.values.reduce(into: [:]) { $0[$1.classType, default: 0] += 1 }
    }

    /// Nodes with a seed, steps and cfg and positive/negative inputs: KSampler, KSamplerAdvanced
    /// and custom samplers shaped like them.
    var samplers: [Node] {
        orderedIDs.compactMap { nodes[$0] }.filter { $0.inputs["positive"] != nil && $0.inputs["negative"] != nil }
    }

    /// The text a conditioning input leads to: a CLIPTextEncode-like node's `text` (or `text_g`,
    /// …), following links through other nodes' inputs a few steps. Each node is visited once per
    /// search, so a hostile graph (cycles, fan-out) costs at most its size.
    func text(from input: Any?) -> String? {
        var visited: Set<String> = []
        return text(from: input, depth: 0, visited: &visited)
    }

    private func text(from input: Any?, depth: Int, visited: inout Set<String>) -> String? {
        guard depth < 8 else { return nil }
        if let string = input as? String { return string }
        guard let link = input as? [Any], let id = link.first.map({ "\($0)" }), let node = nodes[id],
              visited.insert(id).inserted else { return nil }
        for key in ["text", "text_g", "text_l", "prompt", "string", "value", "conditioning", "conditioning_1", "conditioning_to"] {
            if let value = node.inputs[key], let found = text(from: value, depth: depth + 1, visited: &visited) { return found }
        }
        return nil
    }

    private func linkedID(_ input: Any?) -> String? {
        (input as? [Any])?.first.map { "\($0)" }
    }

    private func scalar(_ value: Any?) -> Any? {
        guard let value, !(value is [Any]) else { return nil }  // a link, not a value
        return value
    }

    func jsonObject(workflowNodes: Int?) -> [String: Any] {
        var object: [String: Any] = ["node_classes": classCounts]
        object["samplers"] = samplers.map { node -> [String: Any] in
            var s: [String: Any] = ["node": node.id, "class_type": node.classType]
            for key in ["seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"] {
                if let v = scalar(node.inputs[key]) { s[key == "noise_seed" ? "seed" : key] = v }
            }
            if let p = text(from: node.inputs["positive"]) { s["positive"] = p }
            if let n = text(from: node.inputs["negative"]) { s["negative"] = n }
            return s
        }
        object["checkpoints"] = orderedIDs.compactMap { nodes[$0]?.inputs["ckpt_name"] as? String }
        object["loras"] = orderedIDs.compactMap { nodes[$0]?.inputs["lora_name"] as? String }
        object["sizes"] = orderedIDs.compactMap { id -> [Int]? in
            guard let node = nodes[id], let w = node.inputs["width"] as? Int, let h = node.inputs["height"] as? Int,
                  node.classType.contains("Latent") else { return nil }
            return [w, h]
        }
        if let workflowNodes { object["workflow_nodes"] = workflowNodes }
        return object
    }

    func summary(workflowNodes: Int?) -> String {
        var lines = ["ComfyUI graph (\"prompt\" chunk): \(nodes.count) nodes: "
            + classCounts.sorted { $0.key < $1.key }.map { $0.value > 1 ? "\($0.key) x\($0.value)" : $0.key }.joined(separator: ", ")]
        let object = jsonObject(workflowNodes: workflowNodes)
        for sampler in object["samplers"] as? [[String: Any]] ?? [] {
            let settings = ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"].compactMap { key in
                sampler[key].map { "\(key) \($0)" }
            }
            lines.append("  \(sampler["class_type"] ?? "") (node \(sampler["node"] ?? "")): \(settings.joined(separator: ", "))")
            lines.append("    positive: \(sampler["positive"] as? String ?? "(not found)")")
            lines.append("    negative: \(sampler["negative"] as? String ?? "(not found)")")
        }
        if let checkpoints = object["checkpoints"] as? [String], !checkpoints.isEmpty {
            lines.append("  checkpoint: \(checkpoints.joined(separator: ", "))")
        }
        if let loras = object["loras"] as? [String], !loras.isEmpty { lines.append("  LoRA: \(loras.joined(separator: ", "))") }
        if let sizes = object["sizes"] as? [[Int]], !sizes.isEmpty {
            lines.append("  size: \(sizes.map { "\($0[0])x\($0[1])" }.joined(separator: ", "))")
        }
        if let workflowNodes { lines.append("ComfyUI workflow (\"workflow\" chunk): \(workflowNodes) nodes") }
        return lines.joined(separator: "\n")
    }
}
