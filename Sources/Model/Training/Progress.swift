import Foundation

/// Progress of long work: one updating line on a terminal, plain log lines otherwise.
public final class ProgressReporter {
    let total: Int
    let label: String
    let isTerminal: Bool
    let start = DispatchTime.now().uptimeNanoseconds
    let firstStep: Int
    /// Plain-line interval when not on a terminal.
    let every: Int
    var lastDraw: UInt64 = 0
    /// What one step counts ("step", "batch", "layer").
    let unit: String

    public init(label: String, total: Int, firstStep: Int = 0, every: Int = 10, unit: String = "step") {
        self.label = label
        self.total = total
        self.firstStep = firstStep
        self.every = max(1, every)
        self.unit = unit
        isTerminal = isatty(STDERR_FILENO) != 0 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
    }

    /// Reports `step` with `fields` (e.g. loss) and `tokens` processed since `firstStep`.
    public func update(step: Int, tokens: Int, fields: [(String, String)]) {
        if let text = line(step: step, tokens: tokens, fields: fields) { print(text); fflush(nil) }
    }

    /// As ``update(step:tokens:fields:)``, but a plain line that is due (not on a terminal) is
    /// returned for the caller to log instead of printed. `done`, when given, is the fraction of
    /// the work finished (for steps of unequal cost); the ETA is then elapsed × (1 − done)/done.
    public func line(step: Int, tokens: Int, fields: [(String, String)], done fraction: Double? = nil) -> String? {
        let now = DispatchTime.now().uptimeNanoseconds
        let elapsed = Double(now - start) / 1e9
        let done = step - firstStep
        let rate = elapsed > 0 ? Double(tokens) / elapsed : 0
        var eta = done > 0 ? elapsed / Double(done) * Double(total - step) : 0
        if let f = fraction, f > 0 { eta = elapsed * (1 - f) / f }
        let text =
            "\(label) \(unit) \(step)/\(total)" + fields.map { " \($0.0) \($0.1)" }.joined()
            + String(format: " %.0f tok/s ETA %@", rate, Self.duration(eta))
        if isTerminal {
            guard now - lastDraw > 100_000_000 || step == total else { return nil }
            lastDraw = now
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
            if step == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else if step % every == 0 || step == total || step == firstStep + 1 {
            return text
        }
        return nil
    }

    /// A line that must not be overwritten (evaluations, checkpoints).
    public func note(_ line: String) {
        if isTerminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + "\n").utf8))
        } else {
            print(line); fflush(nil)
        }
    }

    public static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600
            ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : String(format: "%dm%02ds", s / 60, s % 60)
    }
}
