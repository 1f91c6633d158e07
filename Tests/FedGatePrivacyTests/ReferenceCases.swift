import Foundation
import Testing

/// Reference values computed by Google's dp-accounting, Opacus and mpmath (../shared/reference).
struct ReferenceCases {
    struct Result: @unchecked Sendable {
        let library: String
        let method: String
        let values: [String: Any]
        subscript(_ key: String) -> Double? {
            if let d = values[key] as? Double { return d }
            if let s = values[key] as? String { return Double(s) }
            return nil
        }
        func doubles(_ key: String) -> [Double] {
            (values[key] as? [Any] ?? []).map { v in
                if let d = v as? Double { return d }
                if let s = v as? String { return s == "inf" ? .infinity : (Double(s) ?? .nan) }
                return .nan
            }
        }
    }
    struct Case: @unchecked Sendable, CustomTestArgumentEncodable, CustomStringConvertible {
        var description: String { id }
        func encodeTestArgument(to encoder: some Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(id)
        }
        let id: String
        let family: String
        let parameters: [String: Any]
        let results: [Result]
        func double(_ key: String) -> Double { (parameters[key] as! NSNumber).doubleValue }
        func int(_ key: String) -> Int { (parameters[key] as! NSNumber).intValue }
        func result(_ library: String, methodContains: String = "") -> Result? {
            results.first { $0.library == library && (methodContains.isEmpty || $0.method.contains(methodContains)) }
        }
    }

    static let all: [Case] = {
        let url = Bundle.module.url(forResource: "dp_public", withExtension: "json", subdirectory: "Fixtures")!
        let root = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (root["cases"] as! [[String: Any]]).map { c in
            Case(id: c["id"] as! String, family: c["family"] as! String,
                 parameters: c["parameters"] as! [String: Any],
                 results: (c["results"] as! [[String: Any]]).map {
                     Result(library: $0["library"] as! String, method: $0["method"] as! String,
                            values: $0["values"] as! [String: Any])
                 })
        }
    }()

    static func family(_ name: String) -> [Case] { all.filter { $0.family == name } }
}

/// |a − b| ≤ rel·|b| + abs
func close(_ a: Double, _ b: Double, rel: Double, abs absTol: Double = 0) -> Bool {
    if a == b { return true }
    return abs(a - b) <= rel * abs(b) + absTol
}
