/// Errors from building a model: configurations this engine does not implement, or configs
/// that contradict themselves. Weight problems surface as `WeightsError`.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case unsupported(component: String, String)
    case invalidConfig(component: String, String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .unsupported(let component, let what):
            return "\(component): \(what) is not supported by this engine (Stable Diffusion 1.x/2.x only)"
        case .invalidConfig(let component, let what):
            return "\(component): invalid config.json: \(what)"
        case .invalidInput(let what):
            return what
        }
    }
}
