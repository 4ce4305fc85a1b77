import Foundation

public enum RankStatistics {
    /// Ranks (1 = best = lowest value), ties sharing the lower rank.
    public static func ranks(_ values: [Double]) -> [Int] {
        values.map { v in values.filter { $0 < v }.count + 1 }
    }

    /// Kendall's τ-b between two score lists over the same items (ties handled as τ-b does).
    /// `minimumGap`: when > 0, only pairs whose values in `b` differ by more than it count
    /// (the pairs the reference run separates by more than the noise).
    public static func kendallTau(_ a: [Double], _ b: [Double], minimumGap: Double = 0) -> Double? {
        kendallTau(a, b) { i, j in !(minimumGap > 0 && abs(b[i] - b[j]) <= minimumGap) }
    }

    /// Kendall's τ-b over the pairs (i < j) that `include` accepts.
    public static func kendallTau(_ a: [Double], _ b: [Double], include: (Int, Int) -> Bool) -> Double? {
        precondition(a.count == b.count)
        var concordant = 0.0, discordant = 0.0, tiesA = 0.0, tiesB = 0.0
        for i in 0..<a.count {
            for j in (i + 1)..<a.count {
                guard include(i, j) else { continue }
                let db = b[i] - b[j]
                let da = a[i] - a[j]
                if da == 0 && db == 0 { continue }
                if da == 0 {
                    tiesA += 1
                } else if db == 0 {
                    tiesB += 1
                } else if (da > 0) == (db > 0) {
                    concordant += 1
                } else {
                    discordant += 1
                }
            }
        }
        let n1 = concordant + discordant + tiesA, n2 = concordant + discordant + tiesB
        guard n1 > 0, n2 > 0 else { return nil }
        return (concordant - discordant) / (n1 * n2).squareRoot()
    }
}
