import Foundation

/// Mean cross-entropy of logits (N, V) against targets (N); a target < 0 is ignored (HF uses
/// -100). Returns the loss averaged over non-ignored rows (0 when there are none).
/// When `gradient` is true the logits are overwritten with dLoss/dlogits =
/// (softmax − onehot) / count, and ignored rows with zeros (llm.c's in-place convention).
/// `rowLoss` (N) receives each row's loss (0 for ignored rows).
/// Sums run per chunk in Double and are added in chunk order: deterministic per thread count.
func crossEntropy(
    _ logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
    rowLoss: UnsafeMutablePointer<Float>, N: Int, V: Int, gradient: Bool
) -> Double {
    var valid = 0
    for n in 0..<N where targets[n] >= 0 { valid += 1 }
    let scale = valid > 0 ? 1 / Float(valid) : 0
    Parallel.chunks(N, minimumPerChunk: max(8, 16384 / V)) { _, rows in
        for n in rows {
            let row = logits + n * V
            let t = Int(targets[n])
            guard t >= 0 else {
                rowLoss[n] = 0
                if gradient { row.update(repeating: 0, count: V) }
                continue
            }
            let m = maximum(row, count: V)
            let target = row[t]
            if gradient {
                let sum = expShifted(row, count: V, shift: m)
                rowLoss[n] = m + logf(sum) - target
                let k = scale / sum
                for j in 0..<V { row[j] *= k }
                row[t] -= scale
            } else {
                rowLoss[n] = m + logf(sumExpShifted(row, count: V, shift: m)) - target
            }
        }
    }
    var total = 0.0
    for n in 0..<N { total += Double(rowLoss[n]) }
    return valid > 0 ? total / Double(valid) : 0
}
