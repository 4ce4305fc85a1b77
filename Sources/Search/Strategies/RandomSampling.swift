import Model

/// `samples` candidates drawn without replacement (seeded), once, at proxy.steps.
public struct RandomSampling: SearchStrategy {
    public var samples: Int
    public var seed: UInt64
    public var name: String { "random" }

    public func initialCandidates(_ all: [Candidate]) -> [Candidate] {
        var rng = SeededGenerator(seed: seed)
        return Array(all.shuffled(using: &rng).prefix(samples))
    }
}
