import Model

/// A seeded genetic search over the space: `population` random candidates, then per generation
/// children of the better half (each axis crossed over with probability `crossover` and moved
/// one step in the space with probability `mutation`), never a candidate tried before.
public struct Evolution: SearchStrategy {
    public var population: Int
    public var generations: Int
    public var mutation: Double
    public var crossover: Double
    public var seed: UInt64
    public var name: String { "evolution" }

    public func initialCandidates(_ all: [Candidate]) -> [Candidate] {
        var rng = SeededGenerator(seed: seed)
        return Array(all.shuffled(using: &rng).prefix(population))
    }

    /// Children come from the whole space: the store records all of it.
    public func recordedCandidates(initial: [Candidate], space: [Candidate]) -> [Candidate] { space }

    public func advance(_ f: FinishedRung) throws -> Bool {
        guard f.rung + 1 < generations else { return false }
        var rng = SeededGenerator(seed: seed &+ UInt64(f.rung + 1))
        let scored = f.trials.filter { $0.state == .complete && $0.replicate == 0 }
            .sorted { ($0.score ?? .infinity) < ($1.score ?? .infinity) }
        let parents = Array(scored.prefix(max(2, population / 2)))
        let tried = Set(f.trials.map(\.hash))
        let byHash = Dictionary(uniqueKeysWithValues: f.enumeration.candidates.map { ($0.hash, $0) })
        var children: [Candidate] = []
        var attempts = 0
        while children.count < population && attempts < population * 50 {
            attempts += 1
            let a = byHash[parents[Int(rng.next() % UInt64(parents.count))].hash]!
            let b = byHash[parents[Int(rng.next() % UInt64(parents.count))].hash]!
            var c = a.config
            for axis in c.family.axes {
                if rng.uniform() < crossover { axis.set(&c, axis.value(b.config)) }
                let values = f.spec.space[axis]!
                if rng.uniform() < mutation, values.count > 1 {
                    let i = values.firstIndex(of: axis.value(c)) ?? 0
                    axis.set(&c, values[max(0, min(values.count - 1, i + (rng.next() % 2 == 0 ? -1 : 1)))])
                }
            }
            let child = Candidate(config: c, sequence: f.spec.proxy.sequence)
            if let known = byHash[child.hash], !tried.contains(known.hash), !children.contains(known) {
                children.append(known)
            }
        }
        guard !children.isEmpty else { return false }
        let ids = try f.store.candidateIDs(study: f.study)
        try f.store.addTrials(children.map { (ids[$0.hash]!, f.rung + 1, f.spec.proxy.steps, nil) })
        f.log("generation \(f.rung) done: \(children.count) children")
        return true
    }
}
