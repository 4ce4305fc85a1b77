import Foundation
import Model

/// How a study chooses what to train: its first trials, the rungs' lengths, and after each rung
/// (or generation) the next one. One file per strategy in this folder; the runner claims, runs
/// and records trials and asks the strategy the rest, never naming one.
public protocol SearchStrategy: Sendable {
    /// The spec's `strategy.name`.
    var name: String { get }
    /// The steps of each rung, first to last (one rung of proxy.steps unless the strategy
    /// trains in rungs).
    func fidelities(proxySteps: Int) -> [Int]
    /// The candidates the first trials train, from the space's candidates in order.
    func initialCandidates(_ all: [Candidate]) -> [Candidate]
    /// The candidates the store records for the study: those of the first trials, or the whole
    /// space when later trials are drawn from it.
    func recordedCandidates(initial: [Candidate], space: [Candidate]) -> [Candidate]
    /// How many of the last rung's `finalists` get replicates when `replicates.top` is not given.
    func defaultFinalists(_ finalists: Int) -> Int
    /// After a rung finished: adds the next rung's trials and returns true, or returns false
    /// when the strategy is done.
    func advance(_ finished: FinishedRung) throws -> Bool
}

extension SearchStrategy {
    public func fidelities(proxySteps: Int) -> [Int] { [proxySteps] }
    public func initialCandidates(_ all: [Candidate]) -> [Candidate] { all }
    public func recordedCandidates(initial: [Candidate], space: [Candidate]) -> [Candidate] { initial }
    public func defaultFinalists(_ finalists: Int) -> Int { 3 }
    public func advance(_ finished: FinishedRung) throws -> Bool { false }
}

/// What a strategy sees when a rung is over: every trial of the study, the rung's completed
/// first-seed trials, and the store to add the next rung to.
public struct FinishedRung {
    public let study: Int64
    /// Every trial of the study.
    public let trials: [StudyStore.TrialRow]
    /// The rung that finished (the highest so far).
    public let rung: Int
    /// Its completed trials without replicates.
    public let current: [StudyStore.TrialRow]
    public let spec: SearchSpec
    public let store: StudyStore
    public let enumeration: Enumeration
    public let log: (String) -> Void

    /// The rung's trials best first (ties by id).
    public var ranked: [StudyStore.TrialRow] {
        current.sorted { ($0.score ?? .infinity, $0.id) < ($1.score ?? .infinity, $1.id) }
    }
}

extension Strategy {
    /// The strategy the spec names, as a value.
    public var value: any SearchStrategy {
        switch self {
        case .grid: return Grid()
        case let .random(samples, seed): return RandomSampling(samples: samples, seed: seed)
        case let .successiveHalving(minSteps, eta): return SuccessiveHalving(minSteps: minSteps, eta: eta)
        case let .evolution(population, generations, mutation, crossover, seed):
            return Evolution(
                population: population, generations: generations, mutation: mutation, crossover: crossover, seed: seed)
        case let .puzzle(settings): return Puzzle(settings: settings)
        }
    }
}
