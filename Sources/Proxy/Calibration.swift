import Model

/// A calibration set: N samples of T tokens drawn from a corpus's training split.
public struct CalibrationSet: Sendable {
    public var samples: Int
    public var sequence: Int
    /// samples × sequence token ids, row-major.
    public var tokens: [Int32]
    /// Language of each sample.
    public var languages: [String]
    public var fingerprint: String

    /// Draws `samples` windows of `sequence` tokens: language-balanced (uniform over languages,
    /// α = 0) by default, or from one `language`. Deterministic for a seed.
    /// - Throws: ``ProxyError/calibration(_:)`` when the corpus cannot supply a window of that
    ///   length, the language is absent, or fewer than one sample is asked for.
    public init(corpus: TokenShards, samples: Int, sequence: Int, language: String? = nil, seed: UInt64 = 1234) throws {
        guard samples >= 1 else { throw ProxyError.calibration("asked for \(samples) samples; at least 1 is needed") }
        let sampler: BatchSampler
        do {
            sampler = try BatchSampler(
                shards: corpus, batch: samples, sequence: sequence, sampling: .temperature(0), seed: seed,
                only: language)
        } catch let error as ModelError {
            throw ProxyError.calibration("\(error)")
        }
        let batch = sampler.batch(step: 0)
        self.init(
            tokens: batch.tokens, samples: samples, sequence: sequence,
            languages: batch.languages.map { sampler.languages[$0] })
    }

    /// Windows given as they are: `samples` rows of `sequence` token ids, with their languages.
    public init(tokens: [Int32], samples: Int, sequence: Int, languages: [String]) {
        precondition(tokens.count == samples * sequence && languages.count == samples, "calibration windows")
        self.samples = samples
        self.sequence = sequence
        self.tokens = tokens
        self.languages = languages
        var f = Fingerprint()
        f.add(tokens)
        f.add("\(samples)x\(sequence)")
        fingerprint = f.hex
    }
}
