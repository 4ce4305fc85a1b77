import Foundation
import GRDB
import Model
import Testing

@testable import Search

/// Migration v6: the references older stores spell `studyId`, `candidateId`, `trialId` become
/// `study_id`, `candidate_id`, `trial_id` in place, on SQLite and PostgreSQL, every row kept and
/// every constraint still holding.
@Suite struct StoreMigrationTests {
    static let oldRows = [
        "INSERT INTO study (name, spec, teacher_fingerprint, created_at, state) "
            + "VALUES ('old', '{}', 'f', '2026-11-01 00:00:00', 'complete')",
        "INSERT INTO candidate (studyId, hash, architecture, parameters, non_embedding_parameters, active_parameters, "
            + "flops_per_token) VALUES (1, 'abc', '{}', 10, 5, 10, 20)",
        "INSERT INTO trial (candidateId, rung, fidelity, state, score) VALUES (1, 0, 4, 'complete', 1.5)",
        "INSERT INTO trial (candidateId, rung, fidelity, parent_trial_id, state, score, replicate) "
            + "VALUES (1, 1, 8, 1, 'complete', 1.25, 0)",
        "INSERT INTO metric (trialId, step, name, value) VALUES (2, 8, 'val_loss', 1.25)",
        "INSERT INTO trial_windows (trialId, windows) VALUES (2, '{\"en\": [[2.5, 2]]}')",
    ]

    /// What every store holds after the upgrade, read through the store and through plain SQL.
    static func expectUpgraded(
        _ store: StudyStore, columns: (String) throws -> [String], refuses: (String) throws -> Bool
    ) throws {
        let trials = try store.trials(study: 1)
        #expect(trials.map(\.id) == [1, 2] && trials.map(\.score) == [1.5, 1.25])
        #expect(trials.map(\.hash) == ["abc", "abc"] && trials[1].parentTrialID == 1)
        #expect(try store.metrics(trial: 2).map(\.value) == [1.25])
        #expect(try store.windows(trials: [2])[2]?.windows["en"]?.count == 1)
        let expected = [
            "candidate": "study_id", "trial": "candidate_id", "metric": "trial_id", "trial_windows": "trial_id",
        ]
        for (table, column) in expected {
            let names = try columns(table)
            #expect(names.contains(column), "\(table): \(names)")
            #expect(!names.contains { $0.lowercased().hasSuffix("id") && $0.count > 2 && !$0.hasSuffix("_id") }, "\(table): \(names)")
        }
        // The unique key moved with its column: the same (candidate, rung, replicate) is refused.
        let duplicate = "INSERT INTO trial (candidate_id, rung, fidelity, state, replicate) VALUES (1, 1, 8, 'waiting', 0)"
        #expect(try refuses(duplicate))
        try store.addTrials([(1, 1, 8, nil)], replicate: 1)
        #expect(try store.trials(study: 1).count == 3)
    }

    @Test func sqliteStoreBeforeSnakeCaseIsRenamedInPlace() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("topiary-snake-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("old.sqlite").path
        let q = try DatabaseQueue(path: path)
        try StudyStore.migrator.migrate(q, upTo: "v5-ranking-studies")
        try q.write { db in for sql in Self.oldRows { try db.execute(sql: sql) } }
        try q.close()

        let store = try StudyStore(path: path, access: .write)
        defer { store.close() }
        let check = try DatabaseQueue(path: path)
        try Self.expectUpgraded(store) { table in
            try check.read { db in try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String } }
        } refuses: { sql in
            do { try check.write { try $0.execute(sql: sql) } } catch { return true }
            return false
        }
        let indexes = try check.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        }
        #expect(indexes == ["candidate_on_study_id", "ranking_study_on_teacher", "trial_on_candidate_id", "trial_state"])
        #expect(try check.read { db in try String.fetchAll(db, sql: "PRAGMA foreign_key_check") }.isEmpty)
        try check.close()
    }

    @Test func postgresStoreBeforeSnakeCaseIsRenamedInPlace() throws {
        guard let server = Services.postgres("postgresStoreBeforeSnakeCaseIsRenamedInPlace") else { return }
        let db = try Services.freshDatabase(server, "topiary_snake")
        // The schema as Topiary left it through v5, written the way it wrote it.
        var sql = ["CREATE TABLE topiary_migrations (identifier TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"]
        for m in Schema.migrations.prefix(while: { $0.name != "v6-snake-case-columns" }) {
            sql += m.steps.flatMap { Schema.sql($0, .postgresql) }
            sql.append("INSERT INTO topiary_migrations (identifier) VALUES ('\(m.name)')")
        }
        _ = try Services.psql(db, (sql + Self.oldRows).joined(separator: ";\n"))
        #expect(try Services.psql(db, "SELECT COUNT(*) FROM topiary_migrations") == "5")

        let store = try StudyStore(path: db, access: .write)
        defer { store.close() }
        try Self.expectUpgraded(store) { table in
            try Services.psql(db, "SELECT column_name FROM information_schema.columns WHERE table_name = '\(table)'")
                .split(separator: "\n").map(String.init)
        } refuses: { sql in try Services.run("psql", [db, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]).status != 0 }
        let indexes = try Services.psql(db, "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%\\_on\\_%' ORDER BY 1")
        #expect(indexes == "candidate_on_study_id\nranking_study_on_teacher\ntrial_on_candidate_id", "\(indexes)")
        let unique = try Services.psql(
            db, "SELECT conname FROM pg_constraint WHERE contype = 'u' AND connamespace = 'public'::regnamespace ORDER BY 1")
        #expect(unique == "candidate_study_id_hash_key\nstudy_name_key\ntrial_candidate_id_rung_replicate_key", "\(unique)")
    }
}
