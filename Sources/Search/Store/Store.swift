import Foundation
import GRDB
import Model
import Proxy

/// Within Search, the metric names without their namespace.
typealias Metric = StudyStore.Metric

/// The study store: a SQLite file through GRDB in WAL mode (the embedded default) or a PostgreSQL
/// database through libpq (one study on many machines) — one schema (``Schema``, rendered
/// to each dialect), append-only named migrations, invariants as constraints. Schema
/// (docs/search.md documents it for sqlite3, psql and pandas users):
///
/// - `study(id, name UNIQUE, spec JSON, teacher_fingerprint, created_at, state)`
/// - `candidate(id, study_id → study, hash, architecture JSON, parameters, non_embedding_parameters,
///   active_parameters, flops_per_token, UNIQUE(study_id, hash))`
/// - `trial(id, candidate_id → candidate, rung, fidelity, parent_trial_id → trial, state ∈ waiting |
///   running | complete | failed | pruned, worker, heartbeat_at, started_at, finished_at, error,
///   attempt, score, checkpoint, replicate, UNIQUE(candidate_id, rung, replicate))`; replicate 0 is
///   the search's own run, 1… the finalists rerun with other data-order seeds
/// - `metric(trial_id → trial, step, name, value)`: curves and final scores (`val_loss`,
///   `val_loss/mean`, `val_loss/worst`, `val_loss/<lang>`, `val_kl`, `train_loss`, `seconds`,
///   `score_ci_low`/`score_ci_high`, `promoted_on_tie`). Every column is snake_case (migration
///   `v6-snake-case-columns` renamed the references older stores spell `studyId`, `candidateId`,
///   `trialId`); the tables themselves are ``Schema`` in `Sources/Search/Store/SQL.swift`.
/// - `importance(teacher_fingerprint, calibration_fingerprint, settings JSON, scores JSON,
///   created_at, PRIMARY KEY(teacher_fingerprint, calibration_fingerprint, settings))`: the scores
///   the studies pruned with, computed once per teacher, calibration set and settings.
/// - `trial_windows(trial_id → trial, windows JSON)`: each completed trial's per-window
///   validation losses, for paired intervals.
/// - `ranking_study(id, name, teacher_fingerprint, created_at, result JSON)`: the `topiary
///   ranking` runs (τ against proxy length) for the report of every study of that teacher.
/// - `block_score(teacher_fingerprint, calibration_fingerprint, settings JSON, training, layer,
///   variant, score, created_at)`: the puzzle strategy's one-block replacement scores, per teacher,
///   calibration set, importance settings, training (`pruned` or local distillation's settings),
///   layer and variant.
public final class StudyStore: @unchecked Sendable {
    /// Where the store lives as given: a SQLite file's path or a `postgresql://` URL.
    public let path: String
    /// `path` without a password, for messages.
    public let location: String
    let db: any StoreDatabase
    public var dialect: SQLDialect { db.dialect }
    /// How a command uses the store: `create` (may create the file and its folder, or the schema
    /// in an empty PostgreSQL database: search run, batch), `write` (an existing store: worker,
    /// export, delete), `read` (queries: a SQLite file is opened read-only, so nothing is written
    /// — not even by opening — and a writer's lock never blocks).
    public enum Access: Sendable { case read, write, create }
    public let access: Access

    /// Seconds a PostgreSQL store is retried, with backoff, when its server stops answering mid-run
    /// (default 120, or `TOPIARY_DB_RETRY`); 0 fails at once. A SQLite file has no server to lose.
    public var outageTolerance: Double {
        get { (db as? PostgresDatabase)?.outageTolerance ?? 0 }
        set { (db as? PostgresDatabase)?.outageTolerance = newValue }
    }

    /// Where a PostgreSQL store announces its retries (standard error by default).
    public func onOutage(_ log: @escaping @Sendable (String) -> Void) { (db as? PostgresDatabase)?.log = log }

    /// A store location fit to print: a URL's password replaced by `***`.
    public static func redacted(_ location: String) -> String { PostgresDatabase.redact(location) }

    /// The URL schemes `--db` takes besides a file path.
    public static let schemes = ["postgresql", "postgres"]

    /// Opens a store: a `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE` URL selects
    /// PostgreSQL; anything else is the path of a SQLite file, which `.create` makes (with its
    /// folder) when missing.
    /// - Throws: ``SearchError/store(_:)`` when `path` is a URL of another scheme, a server cannot
    ///   be reached, the file is missing or empty (unless `.create`), is not a SQLite database, was
    ///   written by a newer Topiary (unknown migrations; checked before anything is written), or is
    ///   an older store opened for reading only.
    public init(path: String, access: Access = .create) throws {
        self.path = path
        self.access = access
        if let scheme = path.range(of: "://").map({ String(path[..<$0.lowerBound]) }) {
            guard Self.schemes.contains(scheme.lowercased()) else {
                throw SearchError.store(
                    "--db \(PostgresDatabase.redact(path)): '\(scheme)://' stores are not supported; --db "
                        + "takes a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE) or the path of a SQLite file"
                )
            }
            let pg = try PostgresDatabase(url: path)
            location = pg.display
            try pg.migrate(access: access)
            db = pg
            return
        }
        location = path
        db = try Self.openSQLite(path: path, access: access)
    }

    static func openSQLite(path: String, access: Access) throws -> SQLiteDatabase {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        let exists = fm.fileExists(atPath: path, isDirectory: &isDirectory)
        if isDirectory.boolValue { throw SearchError.store("\(path) is a folder, not a store file") }
        if access != .create {
            guard exists else {
                throw SearchError.store("\(path): no such store (a study is created by `topiary search run`)")
            }
            let size = (try? fm.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            if size == 0 { throw SearchError.store("\(path) is an empty file (0 bytes), not a Topiary store") }
        } else if !exists {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            do { try fm.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw SearchError.store("\(path): cannot create its folder: \(FileIO.describe(error))")
            }
        }
        let migrator = SQLiteDatabase.migrator
        // Before opening for writing (which writes), check read-only that the schema is ours.
        if exists {
            var probe = Configuration()
            probe.readonly = true
            probe.busyMode = .timeout(5)
            do {
                let queue = try Self.readOnlyQueue(path, probe)
                let (superseded, complete) = try queue.read { db in
                    (try migrator.hasBeenSuperseded(db), try migrator.hasCompletedMigrations(db))
                }
                try queue.close()
                if superseded {
                    throw SearchError.store(
                        "\(path) was written by a newer Topiary (unknown schema migrations); refusing to touch it")
                }
                if access == .read && !complete {
                    throw SearchError.store(
                        "\(path) is a store of an older Topiary; open it once with a command that writes "
                            + "(e.g. `topiary search run`) to upgrade it"
                    )
                }
            } catch let error as SearchError { throw error } catch {
                throw SearchError.store("\(path) is not a Topiary store (\(Self.describe(error)))")
            }
        }
        var config = Configuration()
        config.busyMode = .timeout(60)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA foreign_keys = ON") }
        if access == .read {
            config.readonly = true
            do { return SQLiteDatabase(try Self.readOnlyQueue(path, config)) } catch {
                throw SearchError.store("\(path): cannot open: \(Self.describe(error))")
            }
        }
        let pool: DatabasePool
        do { pool = try DatabasePool(path: path, configuration: config) } catch {
            throw SearchError.store("\(path): cannot open: \(Self.describe(error))")
        }
        do { try migrator.migrate(pool) } catch {
            throw SearchError.store("\(path): cannot upgrade the schema: \(Self.describe(error))")
        }
        return SQLiteDatabase(pool)
    }

    /// A read-only connection. SQLite needs to create the `-shm` (and `-wal`) files beside a
    /// WAL-mode database even to read it; on a read-only file system that fails, and only there the
    /// store is opened as immutable (what a writer left checkpointed; nothing can change it there —
    /// elsewhere immutable reads could miss a live writer's changes).
    static func readOnlyQueue(_ path: String, _ config: Configuration) throws -> DatabaseQueue {
        do { return try DatabaseQueue(path: path, configuration: config) } catch {
            var fs = statvfs()
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            guard statvfs(folder, &fs) == 0, fs.f_flag & UInt(ST_RDONLY) != 0 else { throw error }
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            let escaped =
                absolute.addingPercentEncoding(
                    withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "?#%"))) ?? absolute
            guard let queue = try? DatabaseQueue(path: "file:\(escaped)?immutable=1", configuration: config) else {
                throw error
            }
            return queue
        }
    }

    /// A database error in plain words (SQLite's message, without GRDB's decoration).
    static func describe(_ error: Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "\(e.resultCode)" }
        return PostgresDatabase.describe(error)
    }

    /// Default location: `TOPIARY_DB`, else `results/topiary.sqlite`.
    public static func defaultPath(_ explicit: String?) -> String {
        explicit ?? ProcessInfo.processInfo.environment["TOPIARY_DB"] ?? "results/topiary.sqlite"
    }

    /// One write transaction (SQLite: BEGIN IMMEDIATE, waiting on contention; PostgreSQL: retried
    /// on serialization failures and deadlocks).
    @discardableResult
    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        do { return try db.write(body) } catch let e as SearchError { throw e } catch {
            throw SearchError.store("\(location): \(Self.describe(error))")
        }
    }

    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        do { return try db.read(body) } catch let e as SearchError { throw e } catch {
            throw SearchError.store("\(location): \(Self.describe(error))")
        }
    }

    /// PostgreSQL plans the claim's join from table statistics; refreshed when a study or a rung
    /// adds many rows at once (autovacuum would take up to a minute), so that claims stay at index
    /// speed instead of a nested scan. SQLite needs nothing.
    func refreshStatistics() {
        guard dialect == .postgresql else { return }
        _ = try? db.write { db in
            try db.execute("ANALYZE trial"); try db.execute("ANALYZE candidate")
        }
    }

    /// The SQLite migrations (GRDB's migrator over ``Schema``), for tests that build an older store.
    public static var migrator: DatabaseMigrator { SQLiteDatabase.migrator }

    /// Closes the connection (the store is unusable afterwards).
    public func close() { db.close() }
}

// MARK: studies and candidates

extension StudyStore {
    public struct StudyRow: Sendable {
        public var id: Int64, name: String, spec: JSON, teacherFingerprint: String, createdAt: Date, state: String
    }

    public func study(named name: String) throws -> StudyRow? {
        try read { db in
            try db.row("SELECT * FROM study WHERE name = ?", [name]).map(Self.studyRow)
        }
    }

    static func studyRow(_ r: SQLRow) -> StudyRow {
        StudyRow(
            id: r["id"], name: r["name"], spec: JSON.parse(Data((r["spec"] as String).utf8)) ?? .null,
            teacherFingerprint: r["teacher_fingerprint"], createdAt: r["created_at"], state: r["state"])
    }

    public func studies() throws -> [StudyRow] {
        try read { db in try db.rows("SELECT * FROM study ORDER BY id", []).map(Self.studyRow) }
    }

    /// Creates a study with its candidates, or returns the existing one when the spec is the same.
    /// A study of that name with a different spec is refused unless `extend` (then new candidates
    /// are added and the stored spec replaced). All in one transaction: nothing half-written.
    @discardableResult
    public func openStudy(name: String, spec: JSON, teacherFingerprint: String, candidates: [Candidate], extend: Bool)
        throws -> Int64
    {
        try write { db in
            let id: Int64
            if let existing = try db.row("SELECT id, spec, teacher_fingerprint FROM study WHERE name = ?", [name]) {
                id = existing["id"]
                let oldSpec = JSON.parse(Data((existing["spec"] as String).utf8))
                if oldSpec != spec || (existing["teacher_fingerprint"] as String) != teacherFingerprint {
                    guard extend else {
                        throw SearchError.store(
                            "study '\(name)' exists with a different spec or teacher; rename the study, or pass --extend to add to it"
                        )
                    }
                    try db.execute("UPDATE study SET spec = ?, state = 'running' WHERE id = ?", [spec.description, id])
                }
            } else {
                id = try db.scalar(
                    "INSERT INTO study (name, spec, teacher_fingerprint, created_at, state) VALUES (?, ?, ?, ?, 'running') RETURNING id",
                    [name, spec.description, teacherFingerprint, Date()])!
            }
            for c in candidates {
                try db.execute(
                    """
                    INSERT INTO candidate (study_id, hash, architecture, parameters, non_embedding_parameters,\
                     active_parameters, flops_per_token)
                    VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                    """,
                    [
                        id, c.hash, c.architecture.description, c.parameters, c.nonEmbeddingParameters,
                        c.activeParameters, c.flopsPerToken
                    ])
            }
            return id
        }
    }

    public func setStudyState(_ id: Int64, _ state: String) throws {
        try write { db in try db.execute("UPDATE study SET state = ? WHERE id = ?", [state, id]) }
    }

    /// Deletes a study with its candidates, trials and metrics, in one transaction (the foreign
    /// keys cascade). Returns how many trials went.
    /// - Throws: ``SearchError/store(_:)`` when there is no such study, or when a trial is running
    ///   and `evenIfRunning` is false (a live worker would lose its trial).
    @discardableResult
    public func deleteStudy(named name: String, evenIfRunning: Bool = false, staleAfter: Double = 60) throws -> Int {
        try write { db in
            guard let id: Int64 = try db.scalar("SELECT id FROM study WHERE name = ?", [name]) else {
                throw SearchError.store("no study '\(name)'")
            }
            let count = { (state: String) in
                try db.scalar(
                    """
                    SELECT COUNT(*) FROM trial JOIN candidate ON candidate.id = trial.candidate_id
                    WHERE candidate.study_id = ? AND (? = '' OR trial.state = ?)
                    """, [id, state, state]) ?? 0
            }
            // Only trials whose worker is alive count: a heartbeat within `staleAfter` seconds.
            let alive = try db.rows(
                """
                SELECT DISTINCT trial.worker FROM trial JOIN candidate ON candidate.id = trial.candidate_id
                WHERE candidate.study_id = ? AND trial.state = 'running' AND trial.heartbeat_at >= ?
                """, [id, Date().timeIntervalSince1970 - staleAfter]
            ).map { ($0["worker"] as String?) ?? "?" }
            if !alive.isEmpty && !evenIfRunning {
                throw SearchError.store(
                    "study '\(name)' has trials running on \(alive.joined(separator: ", ")) (heartbeat in the "
                        + "last \(Int(staleAfter)) s); stop those workers first, or pass --force"
                )
            }
            let trials: Int = try count("")
            try db.execute("DELETE FROM study WHERE id = ?", [id])
            return trials
        }
    }

    /// candidate hash → id for a study.
    public func candidateIDs(study: Int64) throws -> [String: Int64] {
        try read { db in
            Dictionary(
                uniqueKeysWithValues: try db.rows("SELECT id, hash FROM candidate WHERE study_id = ?", [study])
                    .map { ($0["hash"] as String, $0["id"] as Int64) })
        }
    }
}

// MARK: trials

extension StudyStore {
    /// The names a trial's metrics are recorded under (table `metric`), besides the per-language
    /// losses `val_loss/<lang>` (``language(_:)``).
    public enum Metric: String, Sendable, CaseIterable {
        /// The distillation loss every 10 steps.
        case trainLoss = "train_loss"
        /// Validation loss: token-weighted, unweighted mean over languages, worst language.
        case valLoss = "val_loss", valLossMean = "val_loss/mean", valLossWorst = "val_loss/worst"
        case valKL = "val_kl"
        /// Seconds of distillation per trial (its share of the claim).
        case seconds
        /// The score's 95% bootstrap interval over the validation windows.
        case scoreLow = "score_ci_low", scoreHigh = "score_ci_high"
        /// Successive halving promoted it on a tie at a rung's cut.
        case promotedOnTie = "promoted_on_tie"

        /// `val_loss/<lang>`.
        public static func language(_ code: String) -> String { "val_loss/" + code }
        /// Whether `name` is a per-language loss (not the mean or the worst).
        public static func isLanguage(_ name: String) -> Bool {
            name.hasPrefix("val_loss/") && name != Metric.valLossMean.rawValue && name != Metric.valLossWorst.rawValue
        }
        /// The language of a per-language loss.
        public static func languageCode(_ name: String) -> String { String(name.dropFirst("val_loss/".count)) }
    }

    /// Where a trial stands. Stored as its raw value (the schema's CHECK lists the same five).
    public enum TrialState: String, Sendable, CaseIterable, CustomStringConvertible, SQLBindable, SQLDecodable,
        ExpressibleByStringLiteral
    {
        case waiting, running, complete, failed
        /// Scored, then stopped by successive halving at its rung.
        case pruned
        /// Scored: complete, or pruned after completing.
        public var isScored: Bool { self == .complete || self == .pruned }
        public var description: String { rawValue }
        public var sqlValue: SQLValue { .text(rawValue) }
        public static func decode(_ v: SQLValue) -> TrialState? { String.decode(v).flatMap(TrialState.init(rawValue:)) }
        /// `"complete"` where a TrialState is expected (tests, comparisons); anything else is a bug.
        public init(stringLiteral value: String) {
            guard let s = TrialState(rawValue: value) else { preconditionFailure("'\(value)' is not a trial state") }
            self = s
        }
    }

    public struct TrialRow: Sendable, Equatable {
        public var id: Int64, candidateID: Int64, hash: String, architecture: JSON, rung: Int, fidelity: Int
        public var parentTrialID: Int64?, state: TrialState, attempt: Int, score: Double?, checkpoint: String?,
            error: String?
        /// 0: the search's own run; r ≥ 1: the candidate rerun from its pruned init with data-order seed + r.
        public var replicate: Int = 0
        /// Who ran it (host-pid[-slurm-JOB_TASK]); kept after it finishes.
        public var worker: String? = nil
        public var parameters: Int
        /// Parameters one token touches (= parameters for dense models).
        public var activeParameters: Int
    }

    static func trialRow(_ r: SQLRow) -> TrialRow {
        TrialRow(
            id: r["id"], candidateID: r["candidate_id"], hash: r["hash"],
            architecture: JSON.parse(Data((r["architecture"] as String).utf8)) ?? .null,
            rung: r["rung"], fidelity: r["fidelity"], parentTrialID: r["parent_trial_id"], state: r["state"],
            attempt: r["attempt"],
            score: r["score"], checkpoint: r["checkpoint"], error: r["error"], replicate: r["replicate"],
            worker: r["worker"], parameters: r["parameters"],
            activeParameters: r["active_parameters"])
    }

    static let trialSelect = """
        SELECT trial.*, candidate.study_id, candidate.hash, candidate.architecture, candidate.parameters,\
         candidate.active_parameters FROM trial JOIN candidate ON candidate.id = trial.candidate_id
        """

    /// Adds waiting trials (skipping any that already exist for that candidate, rung and replicate).
    public func addTrials(_ trials: [(candidate: Int64, rung: Int, fidelity: Int, parent: Int64?)], replicate: Int = 0)
        throws
    {
        defer { refreshStatistics() }
        try write { db in
            for t in trials {
                try db.execute(
                    """
                    INSERT INTO trial (candidate_id, rung, fidelity, parent_trial_id, state, replicate) VALUES (?, ?, ?, ?, 'waiting', ?)
                    ON CONFLICT DO NOTHING
                    """, [t.candidate, t.rung, t.fidelity, t.parent, replicate])
            }
        }
    }

    public func trials(study: Int64, rung: Int? = nil) throws -> [TrialRow] {
        try read { db in
            if let rung {
                return try db.rows(
                    Self.trialSelect + " WHERE candidate.study_id = ? AND trial.rung = ? ORDER BY trial.id",
                    [study, rung]
                ).map(Self.trialRow)
            }
            return try db.rows(Self.trialSelect + " WHERE candidate.study_id = ? ORDER BY trial.id", [study]).map(
                Self.trialRow)
        }
    }

    /// In one write transaction: returns trials whose worker stopped beating for `staleAfter`
    /// seconds to waiting (attempt counted; failed after `maxAttempts`, the error kept), then
    /// claims up to `limit` waiting trials of one study and rung for `worker`. On PostgreSQL the
    /// claimed rows are locked with `FOR UPDATE SKIP LOCKED`: concurrent claims never wait on each
    /// other and never take the same trial.
    public func claim(study: Int64?, worker: String, limit: Int, staleAfter: Double, maxAttempts: Int) throws
        -> [TrialRow]
    {
        try write { db in
            let now = Date().timeIntervalSince1970
            try Self.giveBack(
                db, error: "'worker ' || COALESCE(worker, '?') || ' stopped (no heartbeat for \(Int(staleAfter)) s)'",
                [],
                where: "heartbeat_at < ?", [now - staleAfter], maxAttempts: maxAttempts, now: now)
            let studyFilter = study.map { "AND candidate.study_id = \($0)" } ?? ""
            guard
                let first = try db.row(
                    Self.trialSelect
                        + " WHERE trial.state = 'waiting' \(studyFilter) ORDER BY trial.rung, trial.replicate, trial.id LIMIT 1"
                        + db.dialect.skipLocked, [])
            else {
                return []
            }
            // One claim's students share the teacher's batches, so they share a rung and a replicate
            // (its data-order seed).
            let rows = try db.rows(
                Self.trialSelect + """
                     WHERE trial.state = 'waiting' AND candidate.study_id = ? AND trial.rung = ? AND trial.replicate = ?
                     ORDER BY trial.id LIMIT ?
                    """ + db.dialect.skipLocked,
                [first["study_id"] as Int64, first["rung"] as Int, first["replicate"] as Int, limit])
            let claimed = rows.map(Self.trialRow)
            for t in claimed {
                try db.execute(
                    "UPDATE trial SET state = 'running', worker = ?, heartbeat_at = ?, started_at = ? WHERE id = ?",
                    [worker, now, now, t.id])
            }
            return claimed
        }
    }

    public func heartbeat(_ trials: [Int64], worker: String) throws {
        guard !trials.isEmpty else { return }
        try write { db in
            try db.execute(
                "UPDATE trial SET heartbeat_at = ? WHERE worker = ? AND state = 'running' AND id IN "
                    + "(\(trials.map(String.init).joined(separator: ",")))",
                [Date().timeIntervalSince1970, worker])
        }
    }

    /// Records a finished trial and its curve in one transaction — only if this worker still owns
    /// it. Returns false when it does not (another worker took it back after a missed heartbeat):
    /// then nothing is recorded.
    @discardableResult
    public func complete(
        _ trial: Int64, worker: String, score: Double, checkpoint: String,
        metrics: [(step: Int, name: String, value: Double)],
        windows: [String: [WindowLoss]] = [:]
    ) throws -> Bool {
        try write { db in
            guard let owner = try db.row("SELECT worker, state FROM trial WHERE id = ?", [trial]) else {
                throw SearchError.store(
                    "trial \(trial) is gone from \(location): its study was deleted while this process ran it; stopping"
                )
            }
            guard (owner["worker"] as String?) == worker, (owner["state"] as TrialState) == .running else {
                return false
            }
            try db.execute("DELETE FROM metric WHERE trial_id = ?", [trial])
            // A (step, name) given twice keeps the last value.
            var last: [String: Int] = [:]
            for (i, m) in metrics.enumerated() { last["\(m.step)\u{0}\(m.name)"] = i }
            let unique = metrics.indices.filter { last["\(metrics[$0].step)\u{0}\(metrics[$0].name)"] == $0 }.map {
                metrics[$0]
            }
            try Self.insertRows(
                "metric", ["trial_id", "step", "name", "value"], unique.map { [trial, $0.step, $0.name, $0.value] },
                into: db)
            try db.execute("DELETE FROM trial_windows WHERE trial_id = ?", [trial])
            if !windows.isEmpty {
                try db.execute(
                    "INSERT INTO trial_windows (trial_id, windows) VALUES (?, ?)", [trial, Self.encodeWindows(windows)])
            }
            try db.execute(
                """
                UPDATE trial SET state = 'complete', score = ?, checkpoint = ?, finished_at = ?, error = NULL
                WHERE id = ? AND worker = ? AND state = 'running'
                """, [score, checkpoint, Date().timeIntervalSince1970, trial, worker])
            return true
        }
    }

    public func fail(_ trial: Int64, worker: String, error: String) throws {
        try write { db in
            try db.execute(
                "UPDATE trial SET state = 'failed', error = ?, finished_at = ? WHERE id = ? AND worker = ? AND state = 'running'",
                [error, Date().timeIntervalSince1970, trial, worker])
        }
    }

    /// Gives back trials this worker still owns after an error that stopped it: waiting again
    /// with the error kept and an attempt counted, or failed when attempts run out.
    public func release(_ trials: [Int64], worker: String, error: String, maxAttempts: Int) throws {
        guard !trials.isEmpty else { return }
        try write { db in
            try Self.giveBack(
                db, error: "?", [error],
                where: "worker = ? AND id IN (\(trials.map(String.init).joined(separator: ",")))", [worker],
                maxAttempts: maxAttempts, now: Date().timeIntervalSince1970)
        }
    }

    /// Gives back trials this worker still owns without counting an attempt or recording an
    /// error: the work stopped because it was asked to (SIGINT, SIGTERM), not because the trials
    /// failed. Returns how many went back to waiting.
    @discardableResult
    public func unclaim(_ trials: [Int64], worker: String) throws -> Int {
        guard !trials.isEmpty else { return 0 }
        return try write { db in
            let ids = trials.map(String.init).joined(separator: ",")
            return try db.execute(
                "UPDATE trial SET state = 'waiting', worker = NULL WHERE state = 'running' AND worker = ? AND id IN (\(ids))",
                [worker])
        }
    }

    /// Puts running trials that match `condition` back: waiting with an attempt counted and the
    /// error (an SQL expression) kept, or failed once attempts run out. Stale-heartbeat recovery
    /// and ``release(_:worker:error:maxAttempts:)`` share it.
    static func giveBack(
        _ db: any SQLExecutor, error: String, _ errorArguments: [any SQLBindable], where condition: String,
        _ conditionArguments: [any SQLBindable], maxAttempts: Int, now: Double
    ) throws {
        try db.execute(
            """
            UPDATE trial SET state = CASE WHEN attempt + 1 >= ? THEN 'failed' ELSE 'waiting' END,
                attempt = attempt + 1, worker = NULL, error = \(error),
                finished_at = CASE WHEN attempt + 1 >= ? THEN ? ELSE NULL END
            WHERE state = 'running' AND \(condition)
            """, [maxAttempts] + errorArguments + [maxAttempts, now] + conditionArguments)
    }

    /// The running trials of a study with their worker and seconds since its last heartbeat.
    public func runningTrials(study: Int64) throws -> [(hash: String, worker: String, secondsSinceHeartbeat: Double)] {
        try read { db in
            try db.rows(
                """
                SELECT candidate.hash, trial.worker, trial.heartbeat_at FROM trial JOIN candidate ON candidate.id = trial.candidate_id
                WHERE candidate.study_id = ? AND trial.state = 'running' ORDER BY trial.id
                """, [study]
            ).map { row in
                (
                    row["hash"], (row["worker"] as String?) ?? "?",
                    Date().timeIntervalSince1970 - ((row["heartbeat_at"] as Double?) ?? 0)
                )
            }
        }
    }

    /// Records one metric value of a trial (replacing any at the same step and name).
    public func addMetric(_ trial: Int64, step: Int, name: String, value: Double) throws {
        try write { db in
            try db.execute(
                """
                INSERT INTO metric (trial_id, step, name, value) VALUES (?, ?, ?, ?)
                ON CONFLICT (trial_id, step, name) DO UPDATE SET value = excluded.value
                """, [trial, step, name, value])
        }
    }

    public func markPruned(_ trials: [Int64]) throws {
        guard !trials.isEmpty else { return }
        try write { db in
            try db.execute(
                "UPDATE trial SET state = 'pruned' WHERE state = 'complete' AND id IN (\(trials.map(String.init).joined(separator: ",")))"
            )
        }
    }

    /// `{"LANG": [[nll_sum, tokens], …]}`, compact.
    static func encodeWindows(_ windows: [String: [WindowLoss]]) -> String {
        JSON.object(windows.mapValues { .array($0.map { [JSON($0.sum), JSON($0.tokens)] }) }).description
    }

    static func decodeWindows(_ text: String) -> [String: [WindowLoss]]? {
        guard let o = JSON.parse(Data(text.utf8))?.object else { return nil }
        var out: [String: [WindowLoss]] = [:]
        for (lang, rows) in o {
            guard let rows = rows.array else { return nil }
            var ws: [WindowLoss] = []
            for r in rows {
                guard let a = r.array, a.count == 2, let sum = a[0].double, let n = a[1].int else { return nil }
                ws.append(WindowLoss(sum: sum, tokens: n))
            }
            out[lang] = ws
        }
        return out
    }

    /// The validation windows recorded for `trials` (those that have them: trials completed by a
    /// Topiary before per-window losses were kept have none).
    public func windows(trials: [Int64]) throws -> [Int64: EvaluationResult] {
        guard !trials.isEmpty else { return [:] }
        return try read { db in
            var out: [Int64: EvaluationResult] = [:]
            for r in try db.rows(
                "SELECT trial_id, windows FROM trial_windows WHERE trial_id IN (\(trials.map(String.init).joined(separator: ",")))"
            ) {
                if let w = Self.decodeWindows(r["windows"]) { out[r["trial_id"]] = EvaluationResult(windows: w) }
            }
            return out
        }
    }

    public func metrics(trial: Int64) throws -> [(step: Int, name: String, value: Double)] {
        try read { db in
            try db.rows("SELECT step, name, value FROM metric WHERE trial_id = ? ORDER BY step, name", [trial])
                .map { ($0["step"], $0["name"], $0["value"]) }
        }
    }
}

// MARK: importance

extension StudyStore {
    /// Scores recorded for `key`, if any.
    public func importance(_ key: Importance.Key) throws -> ImportanceScores? {
        let text = try read { db in
            try db.scalar(
                "SELECT scores FROM importance WHERE teacher_fingerprint = ? AND calibration_fingerprint = ? AND settings = ?",
                [key.teacher, key.calibration, key.settings]) as String?
        }
        guard let text else { return nil }
        do { return try JSONDecoder().decode(ImportanceScores.self, from: Data(text.utf8)) } catch {
            throw SearchError.store(
                "\(location): importance scores for teacher \(key.teacher) cannot be read: \(error)")
        }
    }

    /// The most recent scores recorded for a teacher (any calibration set and settings), for reports.
    public func latestImportance(teacherFingerprint: String) throws -> ImportanceScores? {
        let text = try read { db in
            try db.scalar(
                "SELECT scores FROM importance WHERE teacher_fingerprint = ? ORDER BY created_at DESC LIMIT 1",
                [teacherFingerprint]) as String?
        }
        return text.flatMap { try? JSONDecoder().decode(ImportanceScores.self, from: Data($0.utf8)) }
    }

    /// Records scores once per key (a second record of the same key is ignored).
    public func recordImportance(_ key: Importance.Key, _ scores: ImportanceScores) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let text = String(decoding: try encoder.encode(scores), as: UTF8.self)
        try write { db in
            try db.execute(
                """
                INSERT INTO importance (teacher_fingerprint, calibration_fingerprint, settings, scores, created_at)
                VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """, [key.teacher, key.calibration, key.settings, text, Date()])
        }
    }

    /// A study's importance scores: from the store, else from the file cache or computed (and then
    /// recorded in the store), so that a store carries the scores its studies pruned with.
    public func importance(
        teacher: DecoderModel, corpus: TokenShards, settings: ImportanceSettings, cache: URL,
        log: (String) -> Void, compute: ((CalibrationSet) throws -> ImportanceScores)? = nil
    ) throws -> ImportanceScores {
        try importance(
            teacherFingerprint: Fingerprint.of(teacher), loadTeacher: { teacher }, corpus: corpus, settings: settings,
            cache: cache, log: log, compute: compute)
    }

    /// The same for a teacher known by its fingerprint, loaded only if the scores must be computed.
    public func importance(
        teacherFingerprint: String, loadTeacher: () throws -> DecoderModel, corpus: TokenShards,
        settings: ImportanceSettings, cache: URL, log: (String) -> Void,
        compute: ((CalibrationSet) throws -> ImportanceScores)? = nil
    ) throws -> ImportanceScores {
        let (key, _) = try Importance.key(teacherFingerprint: teacherFingerprint, corpus: corpus, settings: settings)
        if let scores = try importance(key) {
            log(
                "importance: reusing the scores recorded in the store (teacher \(key.teacher), calibration \(key.calibration))"
            )
            return scores
        }
        let (scores, cached) = try Importance.cached(
            teacherFingerprint: teacherFingerprint, loadTeacher: loadTeacher, corpus: corpus, settings: settings,
            cache: cache, log: log, compute: compute)
        if cached { log("importance: reusing cached scores (teacher \(key.teacher), calibration \(key.calibration))") }
        try recordImportance(key, scores)
        return scores
    }
}

// MARK: block scores

extension StudyStore {
    /// The block library's scores recorded for `key` and `training`: `scores[l][v]` for every
    /// layer below `layers` and every variant of `variants`, or nil when any is missing.
    public func blockScores(_ key: Importance.Key, training: String, layers: Int, variants: [String]) throws
        -> [[Double]]?
    {
        let rows = try read { db in
            try db.rows(
                """
                SELECT layer, variant, score FROM block_score
                WHERE teacher_fingerprint = ? AND calibration_fingerprint = ? AND settings = ? AND training = ?
                """, [key.teacher, key.calibration, key.settings, training])
        }
        var found: [String: Double] = [:]
        for r in rows { found["\(r["layer"] as Int) \(r["variant"] as String)"] = r["score"] as Double }
        var scores: [[Double]] = []
        for l in 0..<layers {
            var row: [Double] = []
            for v in variants {
                guard let x = found["\(l) \(v)"] else { return nil }
                row.append(x)
            }
            scores.append(row)
        }
        return scores
    }

    /// Records them (a score already recorded for the same key is kept).
    public func recordBlockScores(_ key: Importance.Key, training: String, variants: [String], scores: [[Double]])
        throws
    {
        let now = Date()
        var rows: [[any SQLBindable]] = []
        for (l, row) in scores.enumerated() {
            for (v, x) in zip(variants, row) {
                rows.append([key.teacher, key.calibration, key.settings, training, l, v, x, now])
            }
        }
        try write { db in
            try Self.insertRows(
                "block_score", Schema.blockScore.columns.map(\.name), rows, into: db, suffix: "ON CONFLICT DO NOTHING")
        }
    }
}

// MARK: copying between stores

extension StudyStore {
    /// Copies studies — with their candidates, trials (ids renumbered, parents kept), metrics and
    /// the importance scores they pruned with — from this store into `target`, each study in one
    /// transaction of the target (nothing half-written). A study whose name the target already
    /// holds is refused. Works between any two stores (SQLite ↔ PostgreSQL).
    /// - Returns: per study, how many candidates, trials and metric rows went.
    @discardableResult
    public func copy(studies names: [String]? = nil, to target: StudyStore, log: (String) -> Void = { _ in }) throws
        -> [(study: String, candidates: Int, trials: Int, metrics: Int)]
    {
        let all = try studies()
        let chosen = try (names ?? all.map(\.name)).map { name in
            guard let s = all.first(where: { $0.name == name }) else {
                throw SearchError.store("no study '\(name)' in \(location)")
            }
            return s
        }
        // A name from a store becomes folders and arguments too: the spec's rule, before anything is copied.
        for s in chosen {
            if let problem = SearchSpec.studyNameProblem(s.name) {
                throw SearchError.store("\(location): study name \(problem); not copied")
            }
        }
        // Importance scores first: they are keyed by content, so copying them twice is harmless.
        let importance = try read { db in try db.rows("SELECT * FROM importance ORDER BY created_at") }
        try target.write { db in
            try Self.insert(Schema.importance, importance, into: db, conflict: "ON CONFLICT DO NOTHING")
        }
        // And the puzzle strategy's block scores.
        let blocks = try read { db in try db.rows("SELECT * FROM block_score ORDER BY created_at") }
        try target.write { db in
            try Self.insert(Schema.blockScore, blocks, into: db, conflict: "ON CONFLICT DO NOTHING")
        }
        // So are the teachers' ranking runs (the reports' τ against proxy length); one already there is not copied again.
        let rankings = try read { db in
            try db.rows("SELECT name, teacher_fingerprint, created_at, result FROM ranking_study ORDER BY id")
        }
        try target.write { db in
            for r in rankings {
                let arguments: [any SQLBindable] = [
                    r["name"] as String, r["teacher_fingerprint"] as String, r["result"] as String
                ]
                let present: Int =
                    try db.scalar(
                        "SELECT COUNT(*) FROM ranking_study WHERE name = ? AND teacher_fingerprint = ? AND result = ?",
                        arguments) ?? 0
                if present == 0 {
                    try db.execute(
                        "INSERT INTO ranking_study (name, teacher_fingerprint, result, created_at) VALUES (?, ?, ?, ?)",
                        arguments + [r["created_at"] as Date])
                }
            }
        }
        var copied: [(String, Int, Int, Int)] = []
        for s in chosen {
            let (study, candidates, trials, metrics, windows) = try read { db in
                (
                    try db.row("SELECT * FROM study WHERE id = ?", [s.id])!,
                    try db.rows("SELECT * FROM candidate WHERE study_id = ? ORDER BY id", [s.id]),
                    try db.rows(
                        "SELECT trial.* FROM trial JOIN candidate ON candidate.id = trial.candidate_id WHERE "
                            + "candidate.study_id = ? ORDER BY trial.id",
                        [s.id]),
                    try db.rows(
                        """
                        SELECT metric.* FROM metric JOIN trial ON trial.id = metric.trial_id JOIN candidate ON\
                         candidate.id = trial.candidate_id
                        WHERE candidate.study_id = ? ORDER BY metric.trial_id, metric.step, metric.name
                        """, [s.id]),
                    try db.rows(
                        """
                        SELECT trial_windows.* FROM trial_windows JOIN trial ON trial.id = trial_windows.trial_id
                        JOIN candidate ON candidate.id = trial.candidate_id WHERE candidate.study_id = ? ORDER BY trial_windows.trial_id
                        """, [s.id])
                )
            }
            if trials.contains(where: { ($0["state"] as TrialState) == .running }) {
                log(
                    "warning: study '\(s.name)' has running trials; they are copied as running and will be "
                        + "taken back when their heartbeat goes stale"
                )
            }
            try target.write { db in
                if try db.scalar("SELECT id FROM study WHERE name = ?", [s.name]) as Int64? != nil {
                    throw SearchError.store(
                        "\(target.location) already holds a study '\(s.name)'; delete it there first (topiary "
                            + "results delete \(s.name)) or copy the others with --study"
                    )
                }
                let studyID: Int64 = try Self.insertReturningID(Schema.study, study, into: db, mapping: [:])
                var candidateIDs: [Int64: Int64] = [:]
                for c in candidates {
                    candidateIDs[c["id"]] = try Self.insertReturningID(
                        Schema.candidate, c, into: db, mapping: ["study_id": [study["id"]: studyID]])
                }
                var trialIDs: [Int64: Int64] = [:]
                for t in trials {
                    trialIDs[t["id"]] = try Self.insertReturningID(
                        Schema.trial, t, into: db,
                        mapping: ["candidate_id": candidateIDs, "parent_trial_id": trialIDs])
                }
                let remapped = remapTrial(metrics, trialIDs)
                try Self.insert(Schema.metric, remapped, into: db, conflict: "")
                let windowRows = remapTrial(windows, trialIDs)
                try Self.insert(Schema.trialWindows, windowRows, into: db, conflict: "")
            }
            log(
                "copied study '\(s.name)': \(candidates.count) candidates, \(trials.count) trials, \(metrics.count) metric values"
            )
            copied.append((s.name, candidates.count, trials.count, metrics.count))
        }
        return copied
    }

    /// Rows whose `trial_id` is replaced by the copied trial's id.
    func remapTrial(_ rows: [SQLRow], _ trialIDs: [Int64: Int64]) -> [SQLRow] {
        rows.map { m in
            var row = m
            let old: Int64 = m["trial_id"]
            row.columns = m.columns.map {
                $0.name.lowercased() == "trial_id" ? ($0.name, .integer(trialIDs[old]!)) : $0
            }
            return row
        }
    }

    /// A column's value ready for the other engine (dates are text in SQLite, timestamps in PostgreSQL).
    static func portable(_ column: Schema.Column, _ value: SQLValue) -> SQLValue {
        if case .datetime = column.type, let d = Date.decode(value) { return .date(d) }
        return value
    }

    /// Inserts one row without its id (the target numbers it), replacing references by `mapping`
    /// (column → old id → new id); returns the new id.
    static func insertReturningID(
        _ table: Schema.Table, _ row: SQLRow, into db: any SQLExecutor, mapping: [String: [Int64: Int64]]
    ) throws -> Int64 {
        let columns = table.columns.filter { $0.name != "id" }
        let values: [any SQLBindable] = columns.map { c -> SQLValue in
            let v = row.value(c.name) ?? .null
            if let map = mapping[c.name], let old = Int64.decode(v) {
                guard let new = map[old] else { return .null }
                return .integer(new)
            }
            return portable(c, v)
        }
        return try db.scalar(
            "INSERT INTO \(table.name) (\(columns.map(\.name).joined(separator: ", "))) VALUES "
                + "(\(columns.map { _ in "?" }.joined(separator: ", "))) RETURNING id",
            values)!
    }

    /// Inserts rows of a table without an id column, many per statement.
    static func insert(_ table: Schema.Table, _ rows: [SQLRow], into db: any SQLExecutor, conflict: String) throws {
        try insertRows(
            table.name, table.columns.map(\.name),
            rows.map { r in table.columns.map { portable($0, r.value($0.name) ?? .null) } },
            into: db, suffix: conflict)
    }

    /// `INSERT INTO table (columns) VALUES (…), (…) suffix`, 200 rows per statement (one round trip
    /// each on PostgreSQL).
    static func insertRows(
        _ table: String, _ columns: [String], _ rows: [[any SQLBindable]], into db: any SQLExecutor, suffix: String = ""
    ) throws {
        let placeholders = "(" + columns.map { _ in "?" }.joined(separator: ", ") + ")"
        for start in stride(from: 0, to: rows.count, by: 200) {
            let chunk = rows[start..<min(start + 200, rows.count)]
            try db.execute(
                "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
                    + Array(repeating: placeholders, count: chunk.count).joined(separator: ", ") + " " + suffix,
                chunk.flatMap { $0 })
        }
    }
}

// MARK: ranking studies

extension StudyStore {
    /// A recorded `topiary ranking` run.
    public struct RankingRow: Sendable {
        public var name: String
        public var createdAt: Date
        /// The run's `ranking.json`.
        public var result: JSON
    }

    /// Records a `topiary ranking` run of a teacher.
    public func recordRanking(name: String, teacherFingerprint: String, result: JSON) throws {
        try write { db in
            try db.execute(
                "INSERT INTO ranking_study (name, teacher_fingerprint, created_at, result) VALUES (?, ?, ?, ?)",
                [name, teacherFingerprint, Date(), result.description])
        }
    }

    /// The ranking runs recorded for a teacher, oldest first.
    public func rankings(teacherFingerprint: String) throws -> [RankingRow] {
        try read { db in
            try db.rows(
                "SELECT name, created_at, result FROM ranking_study WHERE teacher_fingerprint = ? ORDER BY id",
                [teacherFingerprint]
            ).compactMap { r in
                guard let j = JSON.parse(Data((r["result"] as String).utf8)) else { return nil }
                return RankingRow(name: r["name"], createdAt: r["created_at"], result: j)
            }
        }
    }
}
