import Foundation
import Model

/// Seeded mutations for the fuzz tests (ModelTests' ParserFuzzTests, SearchTests' fuzzers): a JSON
/// value replaced by another kind or an extreme number, keys deleted or added, and byte damage.
public enum Mutation {
    public static let values: [JSON] = [0, -1, 1, 2, 3, 7, 255, 256, 65_536, JSON(1 << 31), JSON(1 << 40), JSON(Double(1 << 53)), 1e300, -1e300,
                                        0.5, -0.0, "", "x", "F32", "BF16", "llama", "mixtral", "model.safetensors", "../x", "grid",
                                        .null, true, false, [], [:], [1, 2], [-1, 0], ["a"], ["min": 1, "max": 0], ["k": 1]]

    /// One random edit somewhere in a JSON tree.
    public static func mutate(_ json: JSON, _ rng: inout SeededGenerator, depth: Int = 0) -> JSON {
        let stop = depth > 4 || rng.next() % 3 == 0
        func value(_ rng: inout SeededGenerator) -> JSON { values[Int(rng.next() % UInt64(values.count))] }
        switch json {
        case var .object(o) where !o.isEmpty:
            let keys = o.keys.sorted()
            let key = keys[Int(rng.next() % UInt64(keys.count))]
            if stop {
                switch rng.next() % 4 {
                case 0: o[key] = nil
                case 1: o["fuzz_\(rng.next() % 5)"] = value(&rng)
                default: o[key] = value(&rng)
                }
            } else {
                o[key] = mutate(o[key]!, &rng, depth: depth + 1)
            }
            return .object(o)
        case var .array(a) where !a.isEmpty:
            let i = Int(rng.next() % UInt64(a.count))
            if stop {
                if rng.next() % 4 == 0 { a.remove(at: i) } else { a[i] = value(&rng) }
            } else {
                a[i] = mutate(a[i], &rng, depth: depth + 1)
            }
            return .array(a)
        default:
            return value(&rng)
        }
    }

    /// Byte-level damage: flips, insertions, deletions, truncation.
    public static func damage(_ data: Data, _ rng: inout SeededGenerator) -> Data {
        var d = [UInt8](data)
        for _ in 0..<(1 + Int(rng.next() % 4)) where !d.isEmpty {
            let i = Int(rng.next() % UInt64(d.count))
            switch rng.next() % 4 {
            case 0: d[i] ^= UInt8(1 << (rng.next() % 8))
            case 1: d.insert(UInt8(rng.next() % 256), at: i)
            case 2: d.remove(at: i)
            default: d = Array(d.prefix(i))
            }
        }
        return Data(d)
    }

    /// A mutated variant of a JSON document: one to three tree edits, or (one time in five) damaged bytes.
    public static func variant(_ json: JSON, _ rng: inout SeededGenerator) -> Data {
        var j = json
        for _ in 0..<(1 + Int(rng.next() % 3)) { j = mutate(j, &rng) }
        return rng.next() % 5 == 0 ? damage(json.data(), &rng) : j.data()
    }

    /// Iterations per fuzzer: `TOPIARY_FUZZ_ITERATIONS`, else the CI pass's 300.
    public static var iterations: Int { Int(ProcessInfo.processInfo.environment["TOPIARY_FUZZ_ITERATIONS"] ?? "") ?? 300 }
}
