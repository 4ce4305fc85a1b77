import Foundation
import Model

/// The JSON spec of a ranking-stability experiment (`topiary ranking SPEC.json`):
///
/// ```json
/// {"name": "ranking-stability", "teacher": "models/fortunes-teacher", "data": "data/fortunes",
///  "candidates": {"width-144": {"hidden_size": 144, "intermediate_size": 256}, …},
///  "steps": [25, 50, 100, 400], "curve_every": 10,
///  "importance": {"samples": 256, "batch": "l2", "sequence": "mean", "layers": "block_importance"},
///  "distill": {"batch": 16, "sequence": 128, "learning_rate": 1e-3, "warmup": 10, "eval_tokens": 4096, "seed": 0}}
/// ```
/// Unknown keys and wrong types are errors naming the JSON path.
public struct RankingSpec: Sendable {
    public var name: String
    public var teacher: String
    public var data: String
    public var candidates: [(String, [String: JSON])]
    public var steps: [Int]
    /// Extra validation points every this many steps (after the warmup, up to the last checkpoint
    /// but one) for the learning-curve prediction; 0: none.
    public var curveEvery = 10
    public var importance = ImportanceSettings()
    public var prune = PruneOptions()
    public var recipe = DistillationRecipe(steps: 1)

    public init(json root: JSON, file: String) throws {
        func fail(_ path: String, _ reason: String) -> ProxyError {
            .invalidOption(field: "\(file): \(path)", reason: reason)
        }
        guard let o = root.object else { throw fail("(root)", "not a JSON object") }
        func check(_ dict: [String: JSON], _ path: String, _ allowed: [String]) throws {
            for k in dict.keys.sorted() where !allowed.contains(k) {
                throw fail(
                    path.isEmpty ? k : "\(path).\(k)", "unknown key (allowed: \(allowed.joined(separator: ", ")))")
            }
        }
        try check(o, "", ["name", "teacher", "data", "candidates", "steps", "curve_every", "importance", "distill"])
        func string(_ d: [String: JSON], _ k: String, _ path: String) throws -> String {
            guard let s = d[k]?.string else { throw fail(path, "expected a string") }
            return s
        }
        func int(_ v: JSON?, _ path: String) throws -> Int {
            guard let n = v?.int, n > 0 else { throw fail(path, "expected a positive integer") }
            return n
        }
        name = try string(o, "name", "name")
        teacher = try string(o, "teacher", "teacher")
        data = try string(o, "data", "data")
        guard let c = o["candidates"]?.object, c.count >= 2 else {
            throw fail("candidates", "expected an object with at least two candidates")
        }
        candidates = try c.keys.sorted().map { key in
            guard let target = c[key]?.object else {
                throw fail("candidates.\(key)", "expected an object of config keys")
            }
            return (key, target)
        }
        guard let s = o["steps"]?.array, !s.isEmpty else { throw fail("steps", "expected a list of step counts") }
        steps = try s.enumerated().map { try int($1, "steps[\($0)]") }
        if let v = o["curve_every"] {
            guard let n = v.int, n >= 0 else { throw fail("curve_every", "expected a non-negative integer") };
            curveEvery = n
        }
        if let imp = o["importance"]?.object {
            try check(
                imp, "importance",
                ["samples", "sequence", "batch", "sequence_aggregation", "layers", "contiguous", "language"])
            if let v = imp["samples"] { importance.samples = try int(v, "importance.samples") }
            if let v = imp["sequence"] { importance.sequence = try int(v, "importance.sequence") }
            if let v = imp["batch"] {
                guard let a = v.string.flatMap(Aggregation.init) else {
                    throw fail("importance.batch", "mean, l2 or variance")
                }; importance.batchAggregation = a
            }
            if let v = imp["sequence_aggregation"] {
                guard let a = v.string.flatMap(Aggregation.init) else {
                    throw fail("importance.sequence_aggregation", "mean, l2 or variance")
                }; importance.sequenceAggregation = a
            }
            if let v = imp["layers"] {
                guard let m = v.string.flatMap(LayerMetric.init) else {
                    throw fail("importance.layers", "block_importance or loss_rise")
                }; prune.layerMetric = m
            }
            if let v = imp["contiguous"] {
                guard let b = v.bool else { throw fail("importance.contiguous", "expected true or false") };
                prune.contiguousLayers = b
            }
            if let v = imp["language"] { importance.language = try string(["l": v], "l", "importance.language") }
        }
        recipe.schedule = "constant"
        if let d = o["distill"]?.object {
            try check(
                d, "distill",
                [
                    "batch", "sequence", "learning_rate", "warmup", "eval_tokens", "seed", "alpha", "kl", "lm",
                    "temperature"
                ])
            if let v = d["batch"] { recipe.batch = try int(v, "distill.batch") }
            if let v = d["sequence"] { recipe.sequence = try int(v, "distill.sequence") }
            if let v = d["warmup"] {
                guard let n = v.int, n >= 0 else { throw fail("distill.warmup", "expected a non-negative integer") };
                recipe.warmup = n
            }
            if let v = d["eval_tokens"] { recipe.evalTokens = try int(v, "distill.eval_tokens") }
            if let v = d["seed"] {
                guard let n = v.int, n >= 0 else { throw fail("distill.seed", "expected a non-negative integer") };
                recipe.seed = UInt64(n)
            }
            for (key, path) in [("learning_rate", \DistillationRecipe.learningRate), ("alpha", \.alpha)] {
                if let v = d[key] {
                    guard let x = v.double, x >= 0 else {
                        throw fail("distill.\(key)", "expected a non-negative number")
                    }; recipe[keyPath: path] = x
                }
            }
            if let v = d["kl"] {
                guard let x = v.double, x >= 0 else { throw fail("distill.kl", "expected a non-negative number") };
                recipe.loss.kl = x
            }
            if let v = d["lm"] {
                guard let x = v.double, x >= 0 else { throw fail("distill.lm", "expected a non-negative number") };
                recipe.loss.lm = x
            }
            if let v = d["temperature"] {
                guard let x = v.double, x > 0 else { throw fail("distill.temperature", "expected a positive number") };
                recipe.loss.temperature = x
            }
        }
    }
}
