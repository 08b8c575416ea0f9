import Foundation

/// Stands in for the CLI's `Resources` (Presets.swift, compiled here from the CLI's source, asks it
/// for the presets folder); the fuzz target only decodes preset bytes.
enum Resources {
    static var presets: URL? { nil }
}
