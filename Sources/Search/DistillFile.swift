import Foundation
import Model
import Proxy

/// The recipe part of an exported `distill.json`: what `topiary export` writes from the study's
/// proxy recipe and what `topiary distill --recipe` reads back, one type both ways (its schema:
/// `docs/schema/distill-recipe.schema.json`). Keys an older export left out take the recipe's
/// own defaults (``DistillationRecipe``), never a second copy of them.
struct DistillFile: Codable, Equatable {
    var schedule: Schedule
    var losses: Losses
    var temperature: Double
    var languageSamplingAlpha: Double?
    var tokenBudget: TokenBudget?

    enum CodingKeys: String, CodingKey {
        case schedule, losses, temperature, languageSamplingAlpha = "language_sampling_alpha", tokenBudget =
            "token_budget"
    }

    struct Schedule: Codable, Equatable {
        var name: String
        var peakLearningRate: Double
        var warmupSteps: Int
        var minRatio: Double?
        var batchSize: Int
        var sequenceLength: Int
        enum CodingKeys: String, CodingKey {
            case name, peakLearningRate = "peak_learning_rate", warmupSteps = "warmup_steps", minRatio = "min_ratio"
            case batchSize = "batch_size", sequenceLength = "sequence_length"
        }
    }

    struct Losses: Codable, Equatable {
        var logitsKL: Double
        var lm: Double
        /// The proxy's hidden-state weight (refused when non-zero: its layer pairs are not here).
        var hidden: Double?
        var klDirection: String?
        enum CodingKeys: String, CodingKey { case logitsKL = "logits_kl", lm, hidden, klDirection = "kl_direction" }
    }

    /// Optional throughout: exports before issue 24 wrote fewer of these keys.
    struct TokenBudget: Codable, Equatable {
        var proxyTokens: Int?
        var fullDistillationSteps: Int?
        var suggestedFullDistillationTokens: Int?
        var note: String?
        enum CodingKeys: String, CodingKey {
            case proxyTokens = "proxy_tokens", fullDistillationSteps = "full_distillation_steps"
            case suggestedFullDistillationTokens = "suggested_full_distillation_tokens", note
        }
    }

    /// The file's part for a proxy recipe `r` whose trial ran `proxySteps`, predicting
    /// `fullSteps` of full distillation.
    init(_ r: DistillationRecipe, proxySteps: Int, fullSteps: Int) {
        schedule = Schedule(
            name: r.schedule, peakLearningRate: r.learningRate, warmupSteps: r.warmup, minRatio: r.minRatio,
            batchSize: r.batch, sequenceLength: r.sequence)
        losses = Losses(
            logitsKL: r.loss.kl, lm: r.loss.lm, hidden: r.loss.hidden.weight, klDirection: r.loss.direction.rawValue)
        temperature = r.loss.temperature
        languageSamplingAlpha = r.alpha
        tokenBudget = TokenBudget(
            proxyTokens: proxySteps * r.batch * r.sequence, fullDistillationSteps: fullSteps,
            suggestedFullDistillationTokens: fullSteps * r.batch * r.sequence,
            note: "export.full_distillation_steps (default 100 × proxy.steps: Minitron distils for "
                + "~100× the proxy's tokens); scale to your compute")
    }

    /// The recipe it describes (steps 1: the caller sets the length).
    var recipe: DistillationRecipe {
        var r = DistillationRecipe(steps: 1)
        r.batch = schedule.batchSize
        r.sequence = schedule.sequenceLength
        r.learningRate = schedule.peakLearningRate
        r.schedule = schedule.name
        r.warmup = schedule.warmupSteps
        r.minRatio = schedule.minRatio ?? r.minRatio
        r.alpha = languageSamplingAlpha ?? r.alpha
        r.loss.kl = losses.logitsKL
        r.loss.lm = losses.lm
        r.loss.direction = losses.klDirection == "reverse" ? .reverse : .forward
        r.loss.temperature = temperature
        return r
    }

    /// Its keys as JSON, to merge into distill.json.
    var json: [String: JSON] {
        let e = JSONEncoder()
        guard let data = try? e.encode(self), let o = JSON.parse(data)?.object else {
            preconditionFailure("DistillFile encodes")
        }
        return o
    }

    /// Decodes the recipe part of `data`, naming the JSON path of a missing or mistyped key.
    static func decode(_ data: Data, file: String) throws -> DistillFile {
        do {
            return try JSONDecoder().decode(DistillFile.self, from: data)
        } catch let e as DecodingError {
            let path: [any CodingKey]
            switch e {
            case let .keyNotFound(key, c): path = c.codingPath + [key]
            case let .typeMismatch(_, c), let .valueNotFound(_, c), let .dataCorrupted(c): path = c.codingPath
            @unknown default: path = []
            }
            throw SearchError.spec(
                file: file, path: path.map(\.stringValue).joined(separator: "."),
                reason: "missing or of the wrong type (a distill.json written by `topiary export`)")
        }
    }

    static let example = DistillFile(
        DistillationRecipe(steps: 180), proxySteps: 180, fullSteps: 18000)
}
