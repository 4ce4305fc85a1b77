import Foundation
import Model
import Proxy

/// Every candidate at `minSteps`, then the best 1/eta of each rung continue for eta times the
/// steps, up to proxy.steps. Noise-aware: up to `strategy.tie_slack` candidates just below a cut
/// that the paired interval cannot tell from the last one promoted go on too.
public struct SuccessiveHalving: SearchStrategy {
    public var minSteps: Int
    public var eta: Int
    public var name: String { "successive_halving" }

    public func fidelities(proxySteps: Int) -> [Int] {
        var f = [minSteps]
        while f.last! < proxySteps { f.append(min(proxySteps, f.last! * eta)) }
        return f
    }

    /// Replicates go to every survivor of the last rung.
    public func defaultFinalists(_ finalists: Int) -> Int { finalists }

    /// How many of `count` candidates (ranked, best first) a cut at `cut` promotes: the first
    /// `cut`, then those after it for which `tied(i)` holds — stopping at the first that is not,
    /// and after `slack` of them. Always a prefix of the ranking, so a candidate is never dropped
    /// while one scored worse goes on.
    public static func promotedCount(count: Int, cut: Int, slack: Int, tied: (Int) -> Bool) -> Int {
        var keep = min(cut, count)
        while keep < count && keep - cut < slack && tied(keep) { keep += 1 }
        return keep
    }

    public func advance(_ f: FinishedRung) throws -> Bool {
        let fidelities = fidelities(proxySteps: f.spec.proxy.steps), rung = f.rung, slack = f.spec.tieSlack
        guard rung + 1 < fidelities.count, f.current.count > 1 else { return false }
        let cut = max(1, Int((Double(f.current.count) / Double(eta)).rounded(.up)))
        let ranked = f.ranked
        // Only the last one promoted and the `tie_slack` just below it are ever compared.
        let near = ranked[(cut - 1)..<min(ranked.count, cut + slack)].map(\.id)
        let windows = slack > 0 && cut < ranked.count ? try f.store.windows(trials: near) : [:]
        let keep = Self.promotedCount(count: ranked.count, cut: cut, slack: slack) { i in
            guard let a = windows[ranked[i].id], let b = windows[ranked[cut - 1].id],
                let d = Noise.pairedDifference(
                    [a], [b], seed: Noise.seed(ranked[i].hash, ranked[cut - 1].hash, "\(rung)"),
                    score: f.spec.objective.value)
            else { return false }
            return d.contains(0)
        }
        try f.store.markPruned(ranked.dropFirst(keep).map(\.id))
        try f.store.addTrials(ranked.prefix(keep).map { ($0.candidateID, rung + 1, fidelities[rung + 1], $0.id) })
        let next = fidelities[rung + 1]
        if keep > cut {
            // Recorded on the trials promoted on a tie, so that the summary counts their extra compute.
            for t in ranked[cut..<keep] {
                try f.store.addMetric(t.id, step: t.fidelity, name: StudyStore.Metric.promotedOnTie.rawValue, value: 1)
            }
            f.log(
                "rung \(rung) done: \(cut) of \(f.current.count) continue to \(next) steps, and \(keep - cut) more tied "
                    + "with the last of them (paired 95% interval of the difference contains 0): "
                    + ranked[cut..<keep].map(\.hash).joined(separator: ", "))
        } else {
            f.log("rung \(rung) done: \(keep) of \(f.current.count) continue to \(next) steps")
        }
        return true
    }
}
