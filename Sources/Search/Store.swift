import Foundation
import GRDB
import Model
import Proxy

/// The study store: SQLite through GRDB in WAL mode, append-only named migrations, invariants as
/// constraints. Schema (docs/search.md documents it for sqlite3 and pandas users):
///
/// - `study(id, name UNIQUE, spec JSON, teacher_fingerprint, created_at, state)`
/// - `candidate(id, study_id → study, hash, architecture JSON, parameters, non_embedding_parameters,
///   active_parameters, flops_per_token, UNIQUE(study_id, hash))`
/// - `trial(id, candidate_id → candidate, rung, fidelity, parent_trial_id → trial, state ∈ waiting |
///   running | complete | failed | pruned, worker, heartbeat_at, started_at, finished_at, error,
///   attempt, score, checkpoint, replicate, UNIQUE(candidate_id, rung, replicate))`; replicate 0 is
///   the search's own run, 1… the finalists rerun with other data-order seeds
/// - `metric(trial_id → trial, step, name, value)`: curves and final scores (`val_loss`,
///   `val_loss/de`, `val_kl`, `train_loss`, `seconds`).
/// - `importance(teacher_fingerprint, calibration_fingerprint, settings JSON, scores JSON,
///   created_at, PRIMARY KEY(teacher_fingerprint, calibration_fingerprint, settings))`: the scores
///   the studies pruned with, computed once per teacher, calibration set and settings.
public final class StudyStore: @unchecked Sendable {
    public let path: String
    let pool: any DatabaseWriter
    /// How a command uses the store: `create` (may create the file and its folder: search run,
    /// batch), `write` (an existing store: worker, export, delete), `read` (queries: opened
    /// read-only, so nothing is written — not even by opening — and a writer's lock never blocks).
    public enum Access: Sendable { case read, write, create }
    public let access: Access

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-studies-candidates-trials-metrics") { db in
            try db.create(table: "study") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.column("spec", .text).notNull()
                t.column("teacher_fingerprint", .text).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("state", .text).notNull().check(sql: "state IN ('running', 'complete')")
            }
            try db.create(table: "candidate") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("study", onDelete: .cascade).notNull()
                t.column("hash", .text).notNull()
                t.column("architecture", .text).notNull()
                t.column("parameters", .integer).notNull().check { $0 > 0 }
                t.column("non_embedding_parameters", .integer).notNull()
                t.column("active_parameters", .integer).notNull()
                t.column("flops_per_token", .integer).notNull()
                t.uniqueKey(["studyId", "hash"])
            }
            try db.create(table: "trial") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("candidate", onDelete: .cascade).notNull()
                t.column("rung", .integer).notNull().check { $0 >= 0 }
                t.column("fidelity", .integer).notNull().check { $0 > 0 }
                t.column("parent_trial_id", .integer).references("trial")
                t.column("state", .text).notNull().check(sql: "state IN ('waiting', 'running', 'complete', 'failed', 'pruned')")
                t.column("worker", .text)
                t.column("heartbeat_at", .double)
                t.column("started_at", .double)
                t.column("finished_at", .double)
                t.column("error", .text)
                t.column("attempt", .integer).notNull().defaults(to: 0)
                t.column("score", .double)
                t.column("checkpoint", .text)
                t.uniqueKey(["candidateId", "rung"])
            }
            try db.create(index: "trial_state", on: "trial", columns: ["state"])
            try db.create(table: "metric") { t in
                t.belongsTo("trial", onDelete: .cascade).notNull()
                t.column("step", .integer).notNull()
                t.column("name", .text).notNull()
                t.column("value", .double).notNull()
                t.primaryKey(["trialId", "step", "name"])
            }
        }
        m.registerMigration("v2-importance") { db in
            try db.create(table: "importance") { t in
                t.column("teacher_fingerprint", .text).notNull()
                t.column("calibration_fingerprint", .text).notNull()
                t.column("settings", .text).notNull()
                t.column("scores", .text).notNull()
                t.column("created_at", .datetime).notNull()
                t.primaryKey(["teacher_fingerprint", "calibration_fingerprint", "settings"])
            }
        }
        m.registerMigration("v3-trial-replicates") { db in
            // Replicates: the finalists rerun with other data-order seeds. A trial is now unique by
            // (candidate, rung, replicate); SQLite cannot change a constraint in place, so the
            // table is rebuilt (foreign keys are checked after the migration).
            try db.create(table: "trial_new") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("candidate", onDelete: .cascade).notNull()
                t.column("rung", .integer).notNull().check { $0 >= 0 }
                t.column("fidelity", .integer).notNull().check { $0 > 0 }
                t.column("parent_trial_id", .integer).references("trial")
                t.column("state", .text).notNull().check(sql: "state IN ('waiting', 'running', 'complete', 'failed', 'pruned')")
                t.column("worker", .text)
                t.column("heartbeat_at", .double)
                t.column("started_at", .double)
                t.column("finished_at", .double)
                t.column("error", .text)
                t.column("attempt", .integer).notNull().defaults(to: 0)
                t.column("score", .double)
                t.column("checkpoint", .text)
                t.column("replicate", .integer).notNull().defaults(to: 0).check { $0 >= 0 }
                t.uniqueKey(["candidateId", "rung", "replicate"])
            }
            try db.execute(sql: """
                INSERT INTO trial_new (id, candidateId, rung, fidelity, parent_trial_id, state, worker, heartbeat_at, started_at,
                                       finished_at, error, attempt, score, checkpoint, replicate)
                SELECT id, candidateId, rung, fidelity, parent_trial_id, state, worker, heartbeat_at, started_at,
                       finished_at, error, attempt, score, checkpoint, 0 FROM trial
                """)
            try db.drop(table: "trial")
            try db.rename(table: "trial_new", to: "trial")
            try db.create(index: "trial_state", on: "trial", columns: ["state"])
        }
        return m
    }

    /// Opens a store; with `.create` the file (and its folder) is made when missing.
    /// - Throws: ``SearchError/store(_:)`` when `path` is a URL (only SQLite files are supported),
    ///   is missing or empty (unless `.create`), is not a SQLite database, was written by a newer
    ///   Topiary (unknown migrations; checked read-only, before anything is written), or is an
    ///   older store opened for reading only.
    public init(path: String, access: Access = .create) throws {
        self.path = path
        self.access = access
        if let scheme = path.range(of: "://").map({ String(path[..<$0.lowerBound]) }) {
            throw SearchError.store("--db \(path): '\(scheme)://' stores are not supported; --db takes the path of a SQLite file (PostgreSQL is planned)")
        }
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        let exists = fm.fileExists(atPath: path, isDirectory: &isDirectory)
        if isDirectory.boolValue { throw SearchError.store("\(path) is a folder, not a store file") }
        if access != .create {
            guard exists else { throw SearchError.store("\(path): no such store (a study is created by `topiary search run`)") }
            let size = (try? fm.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            if size == 0 { throw SearchError.store("\(path) is an empty file (0 bytes), not a Topiary store") }
        } else if !exists {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            do { try fm.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw SearchError.store("\(path): cannot create its folder: \(FileIO.describe(error))")
            }
        }
        let migrator = Self.migrator
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
                if superseded { throw SearchError.store("\(path) was written by a newer Topiary (unknown schema migrations); refusing to touch it") }
                if access == .read && !complete {
                    throw SearchError.store("\(path) is a store of an older Topiary; open it once with a command that writes (e.g. `topiary search run`) to upgrade it")
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
            do { pool = try Self.readOnlyQueue(path, config) } catch {
                throw SearchError.store("\(path): cannot open: \(Self.describe(error))")
            }
            return
        }
        do { pool = try DatabasePool(path: path, configuration: config) } catch {
            throw SearchError.store("\(path): cannot open: \(Self.describe(error))")
        }
        do { try migrator.migrate(pool) } catch {
            throw SearchError.store("\(path): cannot upgrade the schema: \(Self.describe(error))")
        }
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
            let escaped = absolute.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "?#%"))) ?? absolute
            guard let queue = try? DatabaseQueue(path: "file:\(escaped)?immutable=1", configuration: config) else { throw error }
            return queue
        }
    }

    /// A database error in plain words (SQLite's message, without GRDB's decoration).
    static func describe(_ error: Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "\(e.resultCode)" }
        return "\(error)"
    }

    /// Default location: `TOPIARY_DB`, else `results/topiary.sqlite`.
    public static func defaultPath(_ explicit: String?) -> String {
        explicit ?? ProcessInfo.processInfo.environment["TOPIARY_DB"] ?? "results/topiary.sqlite"
    }

    /// A write transaction that takes the write lock at once (BEGIN IMMEDIATE), waiting on contention.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T { try pool.read(body) }
}

// MARK: studies and candidates

extension StudyStore {
    public struct StudyRow: Sendable {
        public var id: Int64, name: String, spec: JSON, teacherFingerprint: String, createdAt: Date, state: String
    }

    public func study(named name: String) throws -> StudyRow? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM study WHERE name = ?", arguments: [name]).map(Self.studyRow)
        }
    }

    static func studyRow(_ r: Row) -> StudyRow {
        StudyRow(id: r["id"], name: r["name"], spec: JSON.parse(Data((r["spec"] as String).utf8)) ?? .null,
                 teacherFingerprint: r["teacher_fingerprint"], createdAt: r["created_at"], state: r["state"])
    }

    public func studies() throws -> [StudyRow] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM study ORDER BY id").map(Self.studyRow) }
    }

    /// Creates a study with its candidates, or returns the existing one when the spec is the same.
    /// A study of that name with a different spec is refused unless `extend` (then new candidates
    /// are added and the stored spec replaced). All in one transaction: nothing half-written.
    @discardableResult
    public func openStudy(name: String, spec: JSON, teacherFingerprint: String, candidates: [Candidate], extend: Bool) throws -> Int64 {
        try write { db in
            let id: Int64
            if let existing = try Row.fetchOne(db, sql: "SELECT id, spec, teacher_fingerprint FROM study WHERE name = ?", arguments: [name]) {
                id = existing["id"]
                let oldSpec = JSON.parse(Data((existing["spec"] as String).utf8))
                if oldSpec != spec || (existing["teacher_fingerprint"] as String) != teacherFingerprint {
                    guard extend else {
                        throw SearchError.store("study '\(name)' exists with a different spec or teacher; rename the study, or pass --extend to add to it")
                    }
                    try db.execute(sql: "UPDATE study SET spec = ?, state = 'running' WHERE id = ?", arguments: [spec.description, id])
                }
            } else {
                try db.execute(sql: "INSERT INTO study (name, spec, teacher_fingerprint, created_at, state) VALUES (?, ?, ?, ?, 'running')",
                               arguments: [name, spec.description, teacherFingerprint, Date()])
                id = db.lastInsertedRowID
            }
            for c in candidates {
                try db.execute(sql: """
                    INSERT OR IGNORE INTO candidate (studyId, hash, architecture, parameters, non_embedding_parameters, active_parameters, flops_per_token)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [id, c.hash, c.architecture.description, c.parameters, c.nonEmbeddingParameters, c.activeParameters, c.flopsPerToken])
            }
            return id
        }
    }

    public func setStudyState(_ id: Int64, _ state: String) throws {
        try write { db in try db.execute(sql: "UPDATE study SET state = ? WHERE id = ?", arguments: [state, id]) }
    }

    /// Deletes a study with its candidates, trials and metrics, in one transaction (the foreign
    /// keys cascade). Returns how many trials went.
    /// - Throws: ``SearchError/store(_:)`` when there is no such study, or when a trial is running
    ///   and `evenIfRunning` is false (a live worker would lose its trial).
    @discardableResult
    public func deleteStudy(named name: String, evenIfRunning: Bool = false, staleAfter: Double = 60) throws -> Int {
        try write { db in
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM study WHERE name = ?", arguments: [name]) else {
                throw SearchError.store("no study '\(name)'")
            }
            let count = { (state: String) in
                try Int.fetchOne(db, sql: """
                    SELECT COUNT(*) FROM trial JOIN candidate ON candidate.id = trial.candidateId
                    WHERE candidate.studyId = ? AND (? = '' OR trial.state = ?)
                    """, arguments: [id, state, state]) ?? 0
            }
            // Only trials whose worker is alive count: a heartbeat within `staleAfter` seconds.
            let alive = try Row.fetchAll(db, sql: """
                SELECT DISTINCT trial.worker FROM trial JOIN candidate ON candidate.id = trial.candidateId
                WHERE candidate.studyId = ? AND trial.state = 'running' AND trial.heartbeat_at >= ?
                """, arguments: [id, Date().timeIntervalSince1970 - staleAfter]).map { ($0["worker"] as String?) ?? "?" }
            if !alive.isEmpty && !evenIfRunning {
                throw SearchError.store("study '\(name)' has trials running on \(alive.joined(separator: ", ")) (heartbeat in the last \(Int(staleAfter)) s); stop those workers first, or pass --force")
            }
            let trials = try count("")
            try db.execute(sql: "DELETE FROM study WHERE id = ?", arguments: [id])
            return trials
        }
    }

    /// candidate hash → id for a study.
    public func candidateIDs(study: Int64) throws -> [String: Int64] {
        try read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT id, hash FROM candidate WHERE studyId = ?", arguments: [study])
                .map { ($0["hash"] as String, $0["id"] as Int64) })
        }
    }
}

// MARK: trials

extension StudyStore {
    public struct TrialRow: Sendable, Equatable {
        public var id: Int64, candidateID: Int64, hash: String, architecture: JSON, rung: Int, fidelity: Int
        public var parentTrialID: Int64?, state: String, attempt: Int, score: Double?, checkpoint: String?, error: String?
        /// 0: the search's own run; r ≥ 1: the candidate rerun from its pruned init with data-order seed + r.
        public var replicate: Int = 0
        public var parameters: Int
        /// Parameters one token touches (= parameters for dense models).
        public var activeParameters: Int
    }

    static func trialRow(_ r: Row) -> TrialRow {
        TrialRow(id: r["id"], candidateID: r["candidateId"], hash: r["hash"], architecture: JSON.parse(Data((r["architecture"] as String).utf8)) ?? .null,
                 rung: r["rung"], fidelity: r["fidelity"], parentTrialID: r["parent_trial_id"], state: r["state"], attempt: r["attempt"],
                 score: r["score"], checkpoint: r["checkpoint"], error: r["error"], replicate: r["replicate"], parameters: r["parameters"],
                 activeParameters: r["active_parameters"])
    }

    static let trialSelect = """
        SELECT trial.*, candidate.hash, candidate.architecture, candidate.parameters, candidate.active_parameters FROM trial JOIN candidate ON candidate.id = trial.candidateId
        """

    /// Adds waiting trials (skipping any that already exist for that candidate, rung and replicate).
    public func addTrials(_ trials: [(candidate: Int64, rung: Int, fidelity: Int, parent: Int64?)], replicate: Int = 0) throws {
        try write { db in
            for t in trials {
                try db.execute(sql: "INSERT OR IGNORE INTO trial (candidateId, rung, fidelity, parent_trial_id, state, replicate) VALUES (?, ?, ?, ?, 'waiting', ?)",
                               arguments: [t.candidate, t.rung, t.fidelity, t.parent, replicate])
            }
        }
    }

    public func trials(study: Int64, rung: Int? = nil) throws -> [TrialRow] {
        try read { db in
            if let rung {
                return try Row.fetchAll(db, sql: Self.trialSelect + " WHERE candidate.studyId = ? AND trial.rung = ? ORDER BY trial.id", arguments: [study, rung]).map(Self.trialRow)
            }
            return try Row.fetchAll(db, sql: Self.trialSelect + " WHERE candidate.studyId = ? ORDER BY trial.id", arguments: [study]).map(Self.trialRow)
        }
    }

    /// In one write transaction: returns trials whose worker stopped beating for `staleAfter`
    /// seconds to waiting (attempt counted; failed after `maxAttempts`, the error kept), then
    /// claims up to `limit` waiting trials of one study and rung for `worker`.
    public func claim(study: Int64?, worker: String, limit: Int, staleAfter: Double, maxAttempts: Int) throws -> [TrialRow] {
        try write { db in
            let now = Date().timeIntervalSince1970
            try Self.giveBack(db, error: "'worker ' || COALESCE(worker, '?') || ' stopped (no heartbeat for ' || CAST(? AS INTEGER) || ' s)'",
                              [staleAfter], where: "heartbeat_at < ?", [now - staleAfter], maxAttempts: maxAttempts, now: now)
            let studyFilter = study.map { "AND candidate.studyId = \($0)" } ?? ""
            guard let first = try Row.fetchOne(db, sql: Self.trialSelect + " WHERE trial.state = 'waiting' \(studyFilter) ORDER BY trial.rung, trial.replicate, trial.id LIMIT 1") else {
                return []
            }
            // One claim's students share the teacher's batches, so they share a rung and a replicate
            // (its data-order seed).
            let rows = try Row.fetchAll(db, sql: Self.trialSelect + """
                 WHERE trial.state = 'waiting' AND candidate.studyId = (SELECT studyId FROM candidate WHERE id = ?) AND trial.rung = ?
                   AND trial.replicate = ?
                 ORDER BY trial.id LIMIT ?
                """, arguments: [first["candidateId"] as Int64, first["rung"] as Int, first["replicate"] as Int, limit])
            let claimed = rows.map(Self.trialRow)
            for t in claimed {
                try db.execute(sql: "UPDATE trial SET state = 'running', worker = ?, heartbeat_at = ?, started_at = ? WHERE id = ?",
                               arguments: [worker, now, now, t.id])
            }
            return claimed
        }
    }

    public func heartbeat(_ trials: [Int64], worker: String) throws {
        guard !trials.isEmpty else { return }
        try write { db in
            try db.execute(sql: "UPDATE trial SET heartbeat_at = ? WHERE worker = ? AND state = 'running' AND id IN (\(trials.map(String.init).joined(separator: ",")))",
                           arguments: [Date().timeIntervalSince1970, worker])
        }
    }

    /// Records a finished trial and its curve in one transaction — only if this worker still owns it.
    public func complete(_ trial: Int64, worker: String, score: Double, checkpoint: String, metrics: [(step: Int, name: String, value: Double)]) throws {
        try write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM trial WHERE id = ?", arguments: [trial]) != nil else {
                throw SearchError.store("trial \(trial) is gone from \(path): its study was deleted while this process ran it; stopping")
            }
            try db.execute(sql: "DELETE FROM metric WHERE trialId = ?", arguments: [trial])
            for m in metrics {
                try db.execute(sql: "INSERT OR REPLACE INTO metric (trialId, step, name, value) VALUES (?, ?, ?, ?)", arguments: [trial, m.step, m.name, m.value])
            }
            try db.execute(sql: """
                UPDATE trial SET state = 'complete', score = ?, checkpoint = ?, finished_at = ?, error = NULL
                WHERE id = ? AND worker = ? AND state = 'running'
                """, arguments: [score, checkpoint, Date().timeIntervalSince1970, trial, worker])
        }
    }

    public func fail(_ trial: Int64, worker: String, error: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE trial SET state = 'failed', error = ?, finished_at = ? WHERE id = ? AND worker = ?",
                           arguments: [error, Date().timeIntervalSince1970, trial, worker])
        }
    }

    /// Gives back trials this worker still owns after an error that stopped it: waiting again
    /// with the error kept and an attempt counted, or failed when attempts run out.
    public func release(_ trials: [Int64], worker: String, error: String, maxAttempts: Int) throws {
        guard !trials.isEmpty else { return }
        try write { db in
            try Self.giveBack(db, error: "?", [error], where: "worker = ? AND id IN (\(trials.map(String.init).joined(separator: ",")))", [worker],
                              maxAttempts: maxAttempts, now: Date().timeIntervalSince1970)
        }
    }

    /// Puts running trials that match `condition` back: waiting with an attempt counted and the
    /// error (an SQL expression) kept, or failed once attempts run out. Stale-heartbeat recovery
    /// and ``release(_:worker:error:maxAttempts:)`` share it.
    static func giveBack(_ db: Database, error: String, _ errorArguments: StatementArguments, where condition: String,
                         _ conditionArguments: StatementArguments, maxAttempts: Int, now: Double) throws {
        try db.execute(sql: """
            UPDATE trial SET state = CASE WHEN attempt + 1 >= ? THEN 'failed' ELSE 'waiting' END,
                attempt = attempt + 1, worker = NULL, error = \(error),
                finished_at = CASE WHEN attempt + 1 >= ? THEN ? ELSE NULL END
            WHERE state = 'running' AND \(condition)
            """, arguments: [maxAttempts] + errorArguments + [maxAttempts, now] + conditionArguments)
    }

    /// The running trials of a study with their worker and seconds since its last heartbeat.
    public func runningTrials(study: Int64) throws -> [(hash: String, worker: String, secondsSinceHeartbeat: Double)] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT candidate.hash, trial.worker, trial.heartbeat_at FROM trial JOIN candidate ON candidate.id = trial.candidateId
                WHERE candidate.studyId = ? AND trial.state = 'running' ORDER BY trial.id
                """, arguments: [study]).map { row in
                (row["hash"], (row["worker"] as String?) ?? "?", Date().timeIntervalSince1970 - ((row["heartbeat_at"] as Double?) ?? 0))
            }
        }
    }

    public func markPruned(_ trials: [Int64]) throws {
        guard !trials.isEmpty else { return }
        try write { db in try db.execute(sql: "UPDATE trial SET state = 'pruned' WHERE state = 'complete' AND id IN (\(trials.map(String.init).joined(separator: ",")))") }
    }

    public func metrics(trial: Int64) throws -> [(step: Int, name: String, value: Double)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT step, name, value FROM metric WHERE trialId = ? ORDER BY step, name", arguments: [trial])
                .map { ($0["step"], $0["name"], $0["value"]) }
        }
    }
}

// MARK: importance

extension StudyStore {
    /// Scores recorded for `key`, if any.
    public func importance(_ key: Importance.Key) throws -> ImportanceScores? {
        let text = try read { db in
            try String.fetchOne(db, sql: "SELECT scores FROM importance WHERE teacher_fingerprint = ? AND calibration_fingerprint = ? AND settings = ?",
                                arguments: [key.teacher, key.calibration, key.settings])
        }
        guard let text else { return nil }
        do { return try JSONDecoder().decode(ImportanceScores.self, from: Data(text.utf8)) } catch {
            throw SearchError.store("\(path): importance scores for teacher \(key.teacher) cannot be read: \(error)")
        }
    }

    /// The most recent scores recorded for a teacher (any calibration set and settings), for reports.
    public func latestImportance(teacherFingerprint: String) throws -> ImportanceScores? {
        let text = try read { db in
            try String.fetchOne(db, sql: "SELECT scores FROM importance WHERE teacher_fingerprint = ? ORDER BY created_at DESC LIMIT 1",
                                arguments: [teacherFingerprint])
        }
        return text.flatMap { try? JSONDecoder().decode(ImportanceScores.self, from: Data($0.utf8)) }
    }

    /// Records scores once per key (a second record of the same key is ignored).
    public func recordImportance(_ key: Importance.Key, _ scores: ImportanceScores) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let text = String(decoding: try encoder.encode(scores), as: UTF8.self)
        try write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO importance (teacher_fingerprint, calibration_fingerprint, settings, scores, created_at)
                VALUES (?, ?, ?, ?, ?)
                """, arguments: [key.teacher, key.calibration, key.settings, text, Date()])
        }
    }

    /// A study's importance scores: from the store, else from the file cache or computed (and then
    /// recorded in the store), so that a store carries the scores its studies pruned with.
    public func importance(teacher: DecoderModel, corpus: TokenShards, settings: ImportanceSettings, cache: URL,
                           log: (String) -> Void) throws -> ImportanceScores {
        let (key, _) = try Importance.key(teacher: teacher, corpus: corpus, settings: settings)
        if let scores = try importance(key) {
            log("importance: reusing the scores recorded in the store (teacher \(key.teacher), calibration \(key.calibration))")
            return scores
        }
        let (scores, cached) = try Importance.cached(teacher: teacher, corpus: corpus, settings: settings, cache: cache, log: log)
        if cached { log("importance: reusing cached scores (teacher \(key.teacher), calibration \(key.calibration))") }
        try recordImportance(key, scores)
        return scores
    }
}
