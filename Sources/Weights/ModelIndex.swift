import Foundation

/// A diffusers pipeline's `model_index.json`: the pipeline class and, for each component folder,
/// the library and class that load it (`"unet": ["diffusers", "UNet2DConditionModel"]`).
/// Entries of `[null, null]` mark components the pipeline leaves out (e.g. `safety_checker`);
/// non-component settings such as `requires_safety_checker` are ignored.
public struct ModelIndex: JSONConfiguration, Equatable {
    /// One component entry; both fields nil for `[null, null]`.
    public struct Component: Sendable, Equatable {
        public var library: String?
        public var className: String?

        public init(library: String?, className: String?) {
            self.library = library
            self.className = className
        }

        /// Whether the pipeline actually has this component (the entry is not `[null, null]`).
        public var isPresent: Bool { library != nil || className != nil }
    }

    public var className: String?
    public var diffusersVersion: String?
    public var components: [String: Component]

    public init(className: String? = "StableDiffusionPipeline", diffusersVersion: String? = nil,
                components: [String: Component] = [:]) {
        self.className = className
        self.diffusersVersion = diffusersVersion
        self.components = components
    }

    /// Names of the components that are present, sorted.
    public var presentComponents: [String] { components.filter { $0.value.isPresent }.keys.sorted() }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        className = try c.decodeIfPresent(String.self, forKey: Key("_class_name"))
        diffusersVersion = try c.decodeIfPresent(String.self, forKey: Key("_diffusers_version"))
        components = [:]
        for key in c.allKeys where !key.stringValue.hasPrefix("_") {
            // Only two-element lists are component entries; anything else is a pipeline option.
            guard let pair = try? c.decode([String?].self, forKey: key), pair.count == 2 else { continue }
            components[key.stringValue] = Component(library: pair[0], className: pair[1])
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encodeIfPresent(className, forKey: Key("_class_name"))
        try c.encodeIfPresent(diffusersVersion, forKey: Key("_diffusers_version"))
        for (name, component) in components.sorted(by: { $0.key < $1.key }) {
            try c.encode([component.library, component.className], forKey: Key(name))
        }
    }
}
