import Foundation

/// Errors of the search service, each naming the JSON path or store object at fault.
public enum SearchError: Error, CustomStringConvertible, Equatable {
    /// A spec breaks a rule; `path` is the JSON path (`space.hidden_size[2]`).
    case spec(file: String, path: String, reason: String)
    /// The space has no candidate inside the budget; the explanation lists what each bound excluded.
    case emptySpace(String)
    case store(String)
    /// An external trial backend failed: its own message, kept on the trial.
    case backend(String)
    /// The layer-choice program (the puzzle strategy) is malformed or its solver failed.
    case solver(String)

    public var description: String {
        switch self {
        case let .spec(file, path, reason): return "\(file): \(path): \(reason)"
        case let .emptySpace(why): return "no candidate fits: \(why)"
        case let .store(why): return "store: \(why)"
        case let .backend(why): return why
        case let .solver(why): return "solver: \(why)"
        }
    }
}

/// The closest of `candidates` to `word` by edit distance, when close enough to be a likely typo.
func closest(_ word: String, in candidates: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let saved = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = saved
            }
        }
        return row[b.count]
    }
    let w = Array(word)
    let best = candidates.map { ($0, distance(w, Array($0))) }.min { $0.1 < $1.1 }
    guard let (name, d) = best, d <= max(2, word.count / 3) else { return nil }
    return name
}
