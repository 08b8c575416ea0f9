import Foundation

/// An error answered with an HTTP status and a JSON body in the shape A1111's clients expect.
public struct APIError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let body: JSONValue

    public var description: String { "HTTP \(status): \(body.text)" }

    /// FastAPI's request-validation failure: 422 with `{"detail": [{"loc", "msg", "type"}]}`.
    public static func validation(_ problems: [FieldProblem]) -> APIError {
        APIError(status: 422, body: ["detail": .array(problems.map {
            ["loc": .array($0.location.map(JSONValue.string)), "msg": .string($0.message), "type": .string($0.type)]
        })])
    }

    /// One validation failure naming its field.
    public static func validation(field: String, _ message: String, type: String = "value_error") -> APIError {
        validation([FieldProblem(location: ["body", field], message: message, type: type)])
    }

    /// The shape of A1111's own exception handler: `{"error", "detail", "body", "errors"}`
    /// (e.g. 404 "Sampler not found").
    public static func a1111(_ status: Int, _ detail: String, error: String = "HTTPException") -> APIError {
        APIError(status: status, body: ["error": .string(error), "detail": .string(detail), "body": "", "errors": ""])
    }

    /// A plain `{"detail": message}`, as FastAPI answers an `HTTPException`.
    public static func detail(_ status: Int, _ message: String) -> APIError {
        APIError(status: status, body: ["detail": .string(message)])
    }
}

/// A field that failed validation: its location (`["body", "steps"]`), a message and a type
/// in pydantic's words (`type_error.integer`, `value_error`, …).
public struct FieldProblem: Sendable, Equatable {
    public var location: [String]
    public var message: String
    public var type: String
}

/// Reads typed fields from a JSON object, collecting one problem per bad field.
struct FieldReader {
    let object: [String: JSONValue]
    var problems: [FieldProblem] = []

    init(_ value: JSONValue) throws {
        guard case .object(let o) = value else {
            throw APIError.validation([FieldProblem(location: ["body"], message: "value is not a valid dict", type: "type_error.dict")])
        }
        object = o
    }

    private mutating func problem(_ key: String, _ message: String, _ type: String) {
        problems.append(FieldProblem(location: ["body", key], message: message, type: type))
    }

    /// A whole number (a JSON number without a fraction, or a string of digits, as pydantic v1 accepts).
    mutating func int(_ key: String, _ fallback: Int) -> Int {
        switch object[key] {
        case nil, .null?: return fallback
        case .number(let n)? where n == n.rounded() && abs(n) < 9.2e18: return Int(n)
        case .string(let s)? where Int(s.trimmingCharacters(in: .whitespaces)) != nil:
            return Int(s.trimmingCharacters(in: .whitespaces))!
        default:
            problem(key, "value is not a valid integer", "type_error.integer")
            return fallback
        }
    }

    mutating func double(_ key: String, _ fallback: Double?) -> Double? {
        switch object[key] {
        case nil, .null?: return fallback
        case .number(let n)?: return n
        case .string(let s)? where Double(s.trimmingCharacters(in: .whitespaces))?.isFinite == true:
            return Double(s.trimmingCharacters(in: .whitespaces))!
        default:
            problem(key, "value is not a valid float", "type_error.float")
            return fallback
        }
    }

    mutating func string(_ key: String, _ fallback: String?) -> String? {
        switch object[key] {
        case nil, .null?: return fallback
        case .string(let s)?: return s
        // A whole number as pydantic writes it; one beyond Int64 (1.01e20 trapped, found by
        // fuzzing) as Swift writes the double.
        case .number(let n)?: return Int64(exactly: n).map { String($0) } ?? String(n)
        default:
            problem(key, "str type expected", "type_error.str")
            return fallback
        }
    }

    mutating func bool(_ key: String, _ fallback: Bool) -> Bool {
        switch object[key] {
        case nil, .null?: return fallback
        case .bool(let b)?: return b
        case .number(let n)? where n == 0 || n == 1: return n == 1
        case .string(let s)?:
            switch s.lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: break
            }
        default: break
        }
        problem(key, "value could not be parsed to a boolean", "type_error.bool")
        return fallback
    }

    mutating func strings(_ key: String) -> [String] {
        switch object[key] {
        case nil, .null?: return []
        case .array(let items)?:
            var result: [String] = []
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item else {
                    problems.append(FieldProblem(location: ["body", key, String(i)], message: "str type expected", type: "type_error.str"))
                    continue
                }
                result.append(s)
            }
            return result
        default:
            problem(key, "value is not a valid list", "type_error.list")
            return []
        }
    }

    /// Adds a range problem (pydantic's `value_error` wording) unless `ok`.
    mutating func check(_ ok: Bool, _ key: String, _ message: String) {
        if !ok { problem(key, message, "value_error") }
    }

    /// Throws the 422 when any field was bad.
    func finish() throws {
        if !problems.isEmpty { throw APIError.validation(problems) }
    }
}
