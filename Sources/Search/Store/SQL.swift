import Foundation

/// The store's SQL, written once for two engines. Statements use `?` placeholders and the
/// subset of SQL that SQLite (≥ 3.35: `RETURNING`, `ON CONFLICT … DO`) and PostgreSQL share;
/// where they differ the ``SQLDialect`` says how (row locks for claims, column types in DDL).
public enum SQLDialect: String, Sendable {
    case sqlite, postgresql

    /// Appended to a claim's SELECT: PostgreSQL locks the rows it claims and skips the ones
    /// another worker's claim holds; SQLite needs none (BEGIN IMMEDIATE serializes writers).
    var skipLocked: String { self == .postgresql ? " FOR UPDATE OF trial SKIP LOCKED" : "" }
}

/// A value bound to or read from a statement.
public enum SQLValue: Sendable, Equatable {
    case null, integer(Int64), double(Double), text(String), date(Date)
}

public protocol SQLBindable { var sqlValue: SQLValue { get } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .integer(self) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .double(self) } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Date: SQLBindable { public var sqlValue: SQLValue { .date(self) } }
extension Optional: SQLBindable where Wrapped: SQLBindable { public var sqlValue: SQLValue { self?.sqlValue ?? .null } }

public protocol SQLDecodable { static func decode(_ value: SQLValue) -> Self? }
extension Int64: SQLDecodable {
    public static func decode(_ v: SQLValue) -> Int64? {
        switch v {
        case let .integer(i): return i;
        case let .double(d): return Int64(exactly: d);
        default: return nil
        }
    }
}
extension Int: SQLDecodable { public static func decode(_ v: SQLValue) -> Int? { Int64.decode(v).map(Int.init) } }
extension Double: SQLDecodable {
    public static func decode(_ v: SQLValue) -> Double? {
        switch v {
        case let .double(d): return d;
        case let .integer(i): return Double(i);
        default: return nil
        }
    }
}
extension String: SQLDecodable {
    public static func decode(_ v: SQLValue) -> String? { if case let .text(s) = v { return s }; return nil }
}
extension Date: SQLDecodable {
    /// A fixed-format formatter in UTC.
    static func utcFormatter(_ format: String) -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = format
        return f
    }
    /// SQLite keeps dates as GRDB writes them: "yyyy-MM-dd HH:mm:ss.SSS" in UTC.
    static let sqliteFormat = utcFormatter("yyyy-MM-dd HH:mm:ss.SSS")
    public static func decode(_ v: SQLValue) -> Date? {
        switch v {
        case let .date(d): return d
        case let .double(d): return Date(timeIntervalSince1970: d)
        case let .text(s): return sqliteFormat.date(from: s) ?? sqliteFormat.date(from: s + ".000")
        default: return nil
        }
    }
}
extension Optional: SQLDecodable where Wrapped: SQLDecodable {
    public static func decode(_ v: SQLValue) -> Wrapped?? {
        v == .null ? .some(nil) : Wrapped.decode(v).map { .some($0) }
    }
}

/// One result row; columns are looked up without regard to case (PostgreSQL folds unquoted
/// names to lower case, SQLite keeps them as written).
public struct SQLRow: Sendable {
    public var columns: [(name: String, value: SQLValue)]
    var index: [String: Int]

    init(_ columns: [(name: String, value: SQLValue)]) {
        self.columns = columns
        var index: [String: Int] = [:]
        for (i, c) in columns.enumerated() where index[c.name.lowercased()] == nil { index[c.name.lowercased()] = i }
        self.index = index
    }

    public func value(_ name: String) -> SQLValue? { index[name.lowercased()].map { columns[$0].value } }

    /// The column's value as `T`; a missing column or a value of another type is a programming
    /// error (the schema is ours), reported with the column's name.
    public subscript<T: SQLDecodable>(_ name: String) -> T {
        guard let v = value(name) else { preconditionFailure("no column '\(name)' in the result") }
        guard let decoded = T.decode(v) else { preconditionFailure("column '\(name)' holds \(v), not \(T.self)") }
        return decoded
    }
}

/// Runs statements inside one transaction (or one read).
public protocol SQLExecutor {
    var dialect: SQLDialect { get }
    /// Runs a statement; returns the number of rows it changed.
    @discardableResult func execute(_ sql: String, _ arguments: [any SQLBindable]) throws -> Int
    func rows(_ sql: String, _ arguments: [any SQLBindable]) throws -> [SQLRow]
}

extension SQLExecutor {
    @discardableResult public func execute(_ sql: String) throws -> Int { try execute(sql, []) }
    public func rows(_ sql: String) throws -> [SQLRow] { try rows(sql, []) }
    public func row(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> SQLRow? {
        try rows(sql, arguments).first
    }
    /// The first column of the first row.
    public func scalar<T: SQLDecodable>(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> T? {
        guard let r = try row(sql, arguments), let v = r.columns.first?.value, v != .null else { return nil }
        return T.decode(v)
    }
}

/// A database a store lives in: SQLite (a file, through GRDB) or PostgreSQL (a server, through
/// libpq).
protocol StoreDatabase: AnyObject, Sendable {
    var dialect: SQLDialect { get }
    /// One write transaction; retried from the start on a transient conflict (PostgreSQL's
    /// serialization failures and deadlocks), so the body must not have effects outside the database.
    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T
    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T
    func close()
}

// MARK: the schema, once

/// The store's tables as data, rendered to each dialect's DDL; the named migrations are the same
/// list on both engines.
enum Schema {
    enum ColumnType { case id, integer, double, text, datetime, reference(String) }

    struct Column {
        var name: String, type: ColumnType
        var notNull = false, unique = false
        var defaultValue: String? = nil
        var check: String? = nil
    }

    struct Table {
        var name: String
        var columns: [Column]
        var uniqueKeys: [[String]] = []
        var primaryKey: [String]? = nil
        var indexes: [(name: String, columns: [String])] = []

        func column(_ n: String) -> Column? { columns.first { $0.name == n } }
    }

    enum Step {
        case create(Table)
        /// A table changed in place: new columns added, unique keys replaced (SQLite rebuilds the
        /// table, since it cannot change a constraint; PostgreSQL alters it).
        case evolve(from: Table, to: Table)
        /// Columns renamed in place (the data is kept): `ALTER TABLE … RENAME COLUMN` on both
        /// engines; indexes are rebuilt under their new names, and PostgreSQL's named unique
        /// constraints renamed to match.
        case rename(from: Table, to: Table, columns: [String: String])
    }

    /// `t` with columns renamed, and its keys and indexes following them (an index named after
    /// a column is renamed too).
    static func renaming(_ t: Table, _ renames: [String: String]) -> Table {
        var out = t
        let r = { (n: String) in renames[n] ?? n }
        out.columns = t.columns.map {
            var c = $0; c.name = r(c.name); return c
        }
        out.uniqueKeys = t.uniqueKeys.map { $0.map(r) }
        out.primaryKey = t.primaryKey?.map(r)
        out.indexes = t.indexes.map { index in
            var name = index.name
            for (old, new) in renames { name = name.replacingOccurrences(of: old, with: new) }
            return (name, index.columns.map(r))
        }
        return out
    }

    static func c(
        _ name: String, _ type: ColumnType, notNull: Bool = true, unique: Bool = false, default d: String? = nil,
        check: String? = nil
    ) -> Column {
        Column(name: name, type: type, notNull: notNull, unique: unique, defaultValue: d, check: check)
    }

    static let study = Table(
        name: "study",
        columns: [
            c("id", .id), c("name", .text, unique: true), c("spec", .text), c("teacher_fingerprint", .text),
            c("created_at", .datetime),
            c("state", .text, check: "state IN ('running', 'complete')")
        ])
    static let candidateV1 = Table(
        name: "candidate",
        columns: [
            c("id", .id), c("studyId", .reference("study")), c("hash", .text), c("architecture", .text),
            c("parameters", .integer, check: "parameters > 0"), c("non_embedding_parameters", .integer),
            c("active_parameters", .integer),
            c("flops_per_token", .integer)
        ], uniqueKeys: [["studyId", "hash"]], indexes: [("candidate_on_studyId", ["studyId"])])
    static let trialV1 = Table(
        name: "trial",
        columns: [
            c("id", .id), c("candidateId", .reference("candidate")), c("rung", .integer, check: "rung >= 0"),
            c("fidelity", .integer, check: "fidelity > 0"), c("parent_trial_id", .reference("trial"), notNull: false),
            c("state", .text, check: "state IN ('waiting', 'running', 'complete', 'failed', 'pruned')"),
            c("worker", .text, notNull: false), c("heartbeat_at", .double, notNull: false),
            c("started_at", .double, notNull: false),
            c("finished_at", .double, notNull: false), c("error", .text, notNull: false),
            c("attempt", .integer, default: "0"),
            c("score", .double, notNull: false), c("checkpoint", .text, notNull: false)
        ], uniqueKeys: [["candidateId", "rung"]],
        indexes: [("trial_on_candidateId", ["candidateId"]), ("trial_state", ["state"])])
    static let trialV3: Table = {
        var t = trialV1
        t.columns.append(c("replicate", .integer, default: "0", check: "replicate >= 0"))
        t.uniqueKeys = [["candidateId", "rung", "replicate"]]
        return t
    }()
    static let metricV1 = Table(
        name: "metric",
        columns: [
            c("trialId", .reference("trial")), c("step", .integer), c("name", .text), c("value", .double)
        ], primaryKey: ["trialId", "step", "name"])
    static let importance = Table(
        name: "importance",
        columns: [
            c("teacher_fingerprint", .text), c("calibration_fingerprint", .text), c("settings", .text),
            c("scores", .text),
            c("created_at", .datetime)
        ], primaryKey: ["teacher_fingerprint", "calibration_fingerprint", "settings"])

    /// Each completed trial's validation windows: `{"LANG": [[nll_sum, tokens], …], …}` in the
    /// evaluation's order (every candidate of a study is scored on the same windows), for paired
    /// comparisons.
    static let trialWindowsV4 = Table(
        name: "trial_windows",
        columns: [
            c("trialId", .reference("trial")), c("windows", .text)
        ], primaryKey: ["trialId"])

    /// One naming convention, snake_case, for every column: the references that v1 and v4 spelled
    /// `studyId`, `candidateId` and `trialId` are `study_id`, `candidate_id` and `trial_id`.
    static let snakeCase = ["studyId": "study_id", "candidateId": "candidate_id", "trialId": "trial_id"]
    static let candidate = renaming(candidateV1, snakeCase)
    static let trial = renaming(trialV3, snakeCase)
    static let metric = renaming(metricV1, snakeCase)
    static let trialWindows = renaming(trialWindowsV4, snakeCase)

    /// Each `topiary ranking` run: how a teacher's candidates rank after pruning alone and after
    /// each proxy length (the run's `ranking.json` as `result`), for the report's τ-against-length plot.
    static let rankingStudy = Table(
        name: "ranking_study",
        columns: [
            c("id", .id), c("name", .text), c("teacher_fingerprint", .text), c("created_at", .datetime),
            c("result", .text)
        ], indexes: [("ranking_study_on_teacher", ["teacher_fingerprint"])])

    /// The puzzle strategy's block library scores: one-block replacement KL of variant `variant`
    /// (`g3/f512`, `-/f256`, …) at teacher layer `layer`, for a teacher, calibration set and
    /// importance settings, with the variants as pruned (`training` = `pruned`) or locally
    /// distilled (`training` = the settings' description).
    static let blockScore = Table(
        name: "block_score",
        columns: [
            c("teacher_fingerprint", .text), c("calibration_fingerprint", .text), c("settings", .text),
            c("training", .text), c("layer", .integer, check: "layer >= 0"), c("variant", .text), c("score", .double),
            c("created_at", .datetime)
        ], primaryKey: ["teacher_fingerprint", "calibration_fingerprint", "settings", "training", "layer", "variant"])

    /// Append-only: a store records which of these it has applied, by name.
    static let migrations: [(name: String, steps: [Step])] = [
        (
            "v1-studies-candidates-trials-metrics",
            [.create(study), .create(candidateV1), .create(trialV1), .create(metricV1)]
        ),
        ("v2-importance", [.create(importance)]),
        // Replicates: the finalists rerun with other data-order seeds; a trial is unique by
        // (candidate, rung, replicate).
        ("v3-trial-replicates", [.evolve(from: trialV1, to: trialV3)]),
        // Per-window validation losses: paired intervals between candidates.
        ("v4-trial-windows", [.create(trialWindowsV4)]),
        // Ranking-stability runs: τ against proxy length, per teacher.
        ("v5-ranking-studies", [.create(rankingStudy)]),
        // One naming convention: snake_case references (data kept, renamed in place).
        (
            "v6-snake-case-columns",
            [
                .rename(from: candidateV1, to: candidate, columns: snakeCase),
                .rename(from: trialV3, to: trial, columns: snakeCase),
                .rename(from: metricV1, to: metric, columns: snakeCase),
                .rename(from: trialWindowsV4, to: trialWindows, columns: snakeCase)
            ]
        ),
        // The puzzle strategy's block scores, per teacher, calibration set and variant.
        ("v7-block-scores", [.create(blockScore)])
    ]

    /// The tables as the last migration leaves them, in an order that respects foreign keys.
    static let tables = [study, candidate, trial, metric, importance, trialWindows, rankingStudy, blockScore]

    static func type(_ t: ColumnType, _ d: SQLDialect) -> String {
        switch (t, d) {
        case (.id, .sqlite): return "INTEGER PRIMARY KEY AUTOINCREMENT"
        case (.id, .postgresql): return "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        case (.integer, .sqlite): return "INTEGER"
        case (.integer, .postgresql): return "BIGINT"
        case (.double, .sqlite): return "DOUBLE"
        case (.double, .postgresql): return "DOUBLE PRECISION"
        case (.text, _): return "TEXT"
        case (.datetime, .sqlite): return "DATETIME"
        case (.datetime, .postgresql): return "TIMESTAMPTZ"
        case let (.reference(table), .sqlite): return "INTEGER REFERENCES \(table)(id) ON DELETE CASCADE"
        case let (.reference(table), .postgresql): return "BIGINT REFERENCES \(table)(id) ON DELETE CASCADE"
        }
    }

    static func columnSQL(_ c: Column, _ d: SQLDialect) -> String {
        var s = "\(c.name) \(type(c.type, d))"
        if c.notNull, case .id = c.type {} else if c.notNull { s += " NOT NULL" }
        if c.unique { s += " UNIQUE" }
        if let v = c.defaultValue { s += " DEFAULT \(v)" }
        if let check = c.check { s += " CHECK (\(check))" }
        return s
    }

    /// Named so that PostgreSQL can drop it when a later migration replaces it.
    static func uniqueName(_ table: String, _ columns: [String]) -> String {
        "\(table)_\(columns.joined(separator: "_").lowercased())_key"
    }

    static func createSQL(_ t: Table, _ d: SQLDialect, name: String? = nil) -> [String] {
        var parts = t.columns.map { columnSQL($0, d) }
        for key in t.uniqueKeys {
            parts.append(
                (d == .postgresql ? "CONSTRAINT \(uniqueName(t.name, key)) " : "")
                    + "UNIQUE (\(key.joined(separator: ", ")))")
        }
        if let pk = t.primaryKey { parts.append("PRIMARY KEY (\(pk.joined(separator: ", ")))") }
        let table = name ?? t.name
        return ["CREATE TABLE \(table) (\n  " + parts.joined(separator: ",\n  ") + "\n)"]
            + (name == nil ? indexSQL(t) : [])
    }

    static func indexSQL(_ t: Table) -> [String] {
        t.indexes.map { "CREATE INDEX \($0.name) ON \(t.name) (\($0.columns.joined(separator: ", ")))" }
    }

    static func sql(_ step: Step, _ d: SQLDialect) -> [String] {
        switch step {
        case let .create(t): return createSQL(t, d)
        case let .evolve(old, new):
            let added = new.columns.filter { old.column($0.name) == nil }
            switch d {
            case .sqlite:
                let kept = new.columns.filter { old.column($0.name) != nil }.map(\.name).joined(separator: ", ")
                return createSQL(new, d, name: "\(new.name)_new")
                    + [
                        "INSERT INTO \(new.name)_new (\(kept)) SELECT \(kept) FROM \(old.name)",
                        "DROP TABLE \(old.name)",
                        "ALTER TABLE \(new.name)_new RENAME TO \(new.name)"
                    ]
                    + indexSQL(new)
            case .postgresql:
                return added.map { "ALTER TABLE \(new.name) ADD COLUMN \(columnSQL($0, d))" }
                    + old.uniqueKeys.filter { !new.uniqueKeys.contains($0) }.map {
                        "ALTER TABLE \(new.name) DROP CONSTRAINT \(uniqueName(old.name, $0))"
                    }
                    + new.uniqueKeys.filter { !old.uniqueKeys.contains($0) }.map {
                        "ALTER TABLE \(new.name) ADD CONSTRAINT \(uniqueName(new.name, $0)) UNIQUE (\($0.joined(separator: ", ")))"
                    }
            }
        case let .rename(old, new, columns):
            let renamed = old.columns.compactMap { c in columns[c.name].map { (c.name, $0) } }
            let dropped = old.indexes.filter { i in !new.indexes.contains { $0.name == i.name } }
            let added = new.indexes.filter { i in !old.indexes.contains { $0.name == i.name } }
            let constraints =
                d == .postgresql
                ? zip(old.uniqueKeys, new.uniqueKeys).filter { $0 != $1 }.map {
                    "ALTER TABLE \(new.name) RENAME CONSTRAINT \(uniqueName(old.name, $0)) TO \(uniqueName(new.name, $1))"
                } : []
            return dropped.map { "DROP INDEX \($0.name)" }
                + renamed.map { "ALTER TABLE \(new.name) RENAME COLUMN \($0) TO \($1)" }
                + constraints
                + indexSQL(Table(name: new.name, columns: new.columns, indexes: added))
        }
    }
}

/// `?` placeholders to PostgreSQL's `$1, $2, …`, leaving quoted text alone.
func numberedPlaceholders(_ sql: String) -> String {
    var out = ""
    var n = 0
    var quote: Character? = nil
    for ch in sql {
        if let q = quote {
            if ch == q { quote = nil }
            out.append(ch)
        } else if ch == "'" || ch == "\"" {
            quote = ch
            out.append(ch)
        } else if ch == "?" {
            n += 1
            out += "$\(n)"
        } else {
            out.append(ch)
        }
    }
    return out
}
