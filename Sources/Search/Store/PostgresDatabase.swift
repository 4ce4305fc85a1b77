import CLibPQ
import Foundation
import Model

/// A store in a PostgreSQL database, through libpq (PostgreSQL's own client library; TLS through
/// the system's OpenSSL): one connection per process, used under a lock (the store's API is
/// synchronous, as libpq is); write transactions retried on serialization failures and deadlocks;
/// claims lock their rows with `FOR UPDATE SKIP LOCKED`; migrations recorded by name in
/// `topiary_migrations` under an advisory lock, so that many workers may open a new database at once.
final class PostgresDatabase: StoreDatabase, @unchecked Sendable {
    /// libpq's connection keywords and values (the password among them, never printed).
    let parameters: [(String, String)]
    let hasPassword: Bool
    /// The URL without its password, for messages.
    let display: String
    private var connection: OpaquePointer?
    private let lock = NSLock()
    /// Seconds to keep retrying, with backoff, once the server stops answering (a refused or lost
    /// connection, a server shutting down or starting up) before an operation fails; 0 fails at
    /// once. Only after the store was opened: a wrong URL fails at once.
    var outageTolerance: Double = 120
    /// Where the retries are announced (standard error by default).
    var log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
    private var opened = false
    /// A failure of the connection rather than of the statement.
    struct Outage: Error { let message: String }
    /// An error the server answered a statement with.
    struct ServerError: Error, CustomStringConvertible {
        let sqlState: String?, message: String, detail: String?
        var description: String {
            message + (detail.map { " (\($0))" } ?? "") + (sqlState.map { " [SQLSTATE \($0)]" } ?? "")
        }
    }
    var dialect: SQLDialect { .postgresql }

    /// Parses `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require]`
    /// (`postgres://` too); the password may also come from `PGPASSWORD`.
    static func configuration(_ url: String) throws -> (parameters: [(String, String)], display: String) {
        guard let u = URLComponents(string: url), let scheme = u.scheme, ["postgresql", "postgres"].contains(scheme)
        else {
            throw SearchError.store(
                "--db \(redact(url)): not a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
        }
        // An IPv6 literal comes bracketed (`[::1]`); libpq wants it bare.
        let bracketed = { (h: String) in h.hasPrefix("[") && h.hasSuffix("]") ? String(h.dropFirst().dropLast()) : h }
        guard let host = u.host.map(bracketed), !host.isEmpty else {
            throw SearchError.store("--db \(redact(url)): no host (postgresql://USER@HOST[:PORT]/DATABASE)")
        }
        guard let user = u.user?.removingPercentEncoding, !user.isEmpty else {
            throw SearchError.store("--db \(redact(url)): no user name (postgresql://USER@HOST[:PORT]/DATABASE)")
        }
        let database = String(u.path.drop { $0 == "/" }).removingPercentEncoding ?? ""
        guard !database.isEmpty, !database.contains("/") else {
            throw SearchError.store(
                "--db \(redact(url)): no database name after the host (postgresql://USER@HOST[:PORT]/DATABASE)")
        }
        let password = u.password?.removingPercentEncoding ?? ProcessInfo.processInfo.environment["PGPASSWORD"]
        let sslmode = u.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable"
        guard ["disable", "prefer", "require"].contains(sslmode) else {
            throw SearchError.store("--db \(redact(url)): sslmode '\(sslmode)' is not one of disable, prefer, require")
        }
        if let unknown = u.queryItems?.first(where: { $0.name != "sslmode" }) {
            throw SearchError.store(
                "--db \(redact(url)): unknown option '\(unknown.name)' (only sslmode is understood)")
        }
        // Everything libpq would otherwise take from PG* variables is given here (a password may
        // still come from ~/.pgpass, as psql's does).
        var p: [(String, String)] = [
            ("host", host), ("port", String(u.port ?? 5432)), ("user", user), ("dbname", database),
            ("sslmode", sslmode), ("connect_timeout", "10"), ("application_name", "topiary"),
            ("client_encoding", "UTF8"), ("options", "-c TimeZone=UTC")
        ]
        if let password { p.append(("password", password)) }
        return (p, redact(url))
    }

    /// The URL with its password replaced by `***`.
    static func redact(_ url: String) -> String {
        guard var u = URLComponents(string: url), u.password != nil else { return url }
        u.password = "***"
        return u.string ?? url
    }

    init(url: String) throws {
        (parameters, display) = try Self.configuration(url)
        hasPassword = parameters.contains { $0.0 == "password" }
        if let v = ProcessInfo.processInfo.environment["TOPIARY_DB_RETRY"].flatMap(Double.init), v >= 0 {
            outageTolerance = v
        }
        lock.lock()
        defer { lock.unlock() }
        do { _ = try connected() } catch let o as Outage { throw SearchError.store("\(display): \(o.message)") }
        opened = true
    }

    deinit { if let connection { PQfinish(connection) } }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        if let connection { PQfinish(connection) }
        connection = nil
    }

    /// libpq's message on one line, without its trailing newline.
    static func oneLine(_ message: UnsafePointer<CChar>?) -> String {
        guard let message else { return "unknown error" }
        return String(cString: message).split(whereSeparator: \.isNewline).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        .filter { !$0.isEmpty }.joined(separator: "; ")
    }

    /// The open connection, or a new one when there is none or the last one broke.
    /// - Throws: ``Outage`` when the server cannot be reached; ``SearchError`` when it refuses
    ///   (authentication, a missing database, TLS it does not offer).
    private func connected() throws -> OpaquePointer {
        if let c = connection {
            if PQstatus(c) == CONNECTION_OK { return c }
            PQfinish(c)
            connection = nil
        }
        let keys = parameters.map { strdup($0.0) }, values = parameters.map { strdup($0.1) }
        defer { (keys + values).forEach { free($0) } }
        var k: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var v: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        guard let c = PQconnectdbParams(&k, &v, 0) else {
            throw Outage(message: "cannot connect: libpq could not allocate a connection")
        }
        guard PQstatus(c) == CONNECTION_OK else {
            let message = Self.oneLine(PQerrorMessage(c))
            let needsPassword = PQconnectionNeedsPassword(c) == 1 && !hasPassword
            PQfinish(c)
            if needsPassword {
                throw SearchError.store(
                    "\(display): cannot connect: the server asks for a password and none was given "
                        + "(postgresql://USER:PASSWORD@HOST/DATABASE, or PGPASSWORD)")
            }
            // The server answered and refused (authentication, no such database, no TLS): waiting
            // will not help — unless it is starting up or shutting down.
            let transient = [
                "the database system is starting up", "the database system is shutting down",
                "the database system is in recovery mode"
            ]
            if (message.contains("FATAL:") || message.contains("SSL")) && !transient.contains(where: message.contains) {
                throw SearchError.store("\(display): cannot connect: \(message)")
            }
            throw Outage(message: "cannot connect: \(message)")
        }
        // NOTICEs ("relation already exists, skipping") are not the user's business.
        PQsetNoticeProcessor(c, { _, _ in }, nil)
        connection = c
        return c
    }

    /// Whether `error` says the connection or the server went away (rather than the statement failed).
    static func isOutage(_ error: Error) -> Bool {
        if error is Outage { return true }
        // 57P01–57P03: shut down by the administrator, crashed, starting up; class 08: connection exceptions.
        if let state = sqlState(error) { return state.hasPrefix("57P") || state.hasPrefix("08") }
        return false
    }

    /// Runs `attempt`, again after each outage (with backoff, the connection reopened) until it
    /// succeeds or ``outageTolerance`` seconds have passed; says so in the log. Called with the
    /// lock held.
    private func surviving<T>(_ attempt: () throws -> T) throws -> T {
        var began: Date?
        var delay = 0.5
        while true {
            do {
                let result = try attempt()
                if let began {
                    log(
                        String(
                            format: "store: %@ answers again after %.0f s; carrying on", display,
                            Date().timeIntervalSince(began)))
                }
                return result
            } catch let outage as Outage {
                if let c = connection { PQfinish(c) }
                connection = nil
                let start = began ?? Date()
                let elapsed = Date().timeIntervalSince(start)
                guard opened, elapsed < outageTolerance, Interruption.requested == nil else {
                    throw SearchError.store(
                        "\(display): \(outage.message)"
                            + (began == nil ? "" : String(format: " (retried for %.0f s)", elapsed)))
                }
                if began == nil {
                    log(
                        "store: \(display) is unreachable (\(outage.message)); retrying for up to \(Int(outageTolerance)) s (--db-retry)"
                    )
                }
                began = start
                Thread.sleep(forTimeInterval: min(delay, max(0.05, outageTolerance - elapsed)))
                delay = min(delay * 2, 10)
            }
        }
    }

    /// A server error in plain words: its message, detail and SQLSTATE.
    static func describe(_ error: Error) -> String { "\(error)" }

    static func sqlState(_ error: Error) -> String? { (error as? ServerError)?.sqlState }

    struct Executor: SQLExecutor {
        let connection: OpaquePointer
        var dialect: SQLDialect { .postgresql }

        /// `yyyy-MM-dd HH:mm:ss` in UTC (the session's time zone), for timestamps both ways.
        static let seconds = Date.utcFormatter("yyyy-MM-dd HH:mm:ss")

        static func text(_ d: Date) -> String {
            let whole = d.timeIntervalSince1970.rounded(.down)
            let micro = Int(((d.timeIntervalSince1970 - whole) * 1e6).rounded())
            return seconds.string(from: Date(timeIntervalSince1970: whole))
                + String(format: ".%06d+00", min(micro, 999_999))
        }

        /// `2026-12-01 23:13:16.123456+00` (the fraction optional).
        static func date(_ s: String) -> Date? {
            guard s.count >= 19, let base = seconds.date(from: String(s.prefix(19))) else { return nil }
            let rest = s.dropFirst(19)
            var fraction = 0.0
            if rest.first == "." { fraction = Double("0" + rest.prefix { $0 == "." || $0.isNumber }) ?? 0 }
            return base.addingTimeInterval(fraction)
        }

        static func text(_ d: Double) -> String {
            d.isNaN ? "NaN" : d == .infinity ? "Infinity" : d == -.infinity ? "-Infinity" : "\(d)"
        }

        /// Runs one statement with text parameters (`?` numbered as `$1…`); the result, cleared by the caller.
        func run(_ sql: String, _ arguments: [any SQLBindable]) throws -> OpaquePointer {
            var types: [Oid] = [], values: [String?] = []
            for a in arguments {
                switch a.sqlValue {
                case .null: types.append(0); values.append(nil)
                case let .integer(i): types.append(20); values.append(String(i)) // int8
                case let .double(d): types.append(701); values.append(Self.text(d)) // float8
                case let .text(s): types.append(25); values.append(s) // text
                case let .date(d): types.append(1184); values.append(Self.text(d)) // timestamptz
                }
            }
            let copies = values.map { $0.map { strdup($0) } ?? nil }
            defer { copies.forEach { free($0) } }
            let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
            let result = PQexecParams(
                connection, numberedPlaceholders(sql), Int32(arguments.count), types, pointers, nil, nil, 0)
            let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
            if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK { return result! }
            defer { PQclear(result) }
            guard let result, PQstatus(connection) == CONNECTION_OK else {
                throw Outage(
                    message: "the connection was lost: " + PostgresDatabase.oneLine(PQerrorMessage(connection)))
            }
            func field(_ code: Character) -> String? {
                PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
            }
            let message = field("M") ?? PostgresDatabase.oneLine(PQresultErrorMessage(result))
            throw ServerError(sqlState: field("C"), message: message, detail: field("D"))
        }

        func execute(_ sql: String, _ arguments: [any SQLBindable]) throws -> Int {
            let r = try run(sql, arguments)
            defer { PQclear(r) }
            return Int(String(cString: PQcmdTuples(r))) ?? 0
        }

        func rows(_ sql: String, _ arguments: [any SQLBindable]) throws -> [SQLRow] {
            let r = try run(sql, arguments)
            defer { PQclear(r) }
            let names = (0..<PQnfields(r)).map { String(cString: PQfname(r, $0)) }
            let types = (0..<PQnfields(r)).map { PQftype(r, $0) }
            return try (0..<PQntuples(r)).map { row in
                SQLRow(
                    try names.indices.map { col in
                        let c = Int32(col)
                        guard PQgetisnull(r, row, c) == 0 else { return (names[col], SQLValue.null) }
                        return (names[col], try Self.value(String(cString: PQgetvalue(r, row, c)), type: types[col]))
                    })
            }
        }

        static func value(_ text: String, type: Oid) throws -> SQLValue {
            switch type {
            case 20, 21, 23: // int8, int2, int4
                guard let i = Int64(text) else {
                    throw ServerError(sqlState: nil, message: "unreadable integer '\(text)'", detail: nil)
                }
                return .integer(i)
            case 700, 701: // float4, float8
                guard let d = Double(text) else {
                    throw ServerError(sqlState: nil, message: "unreadable number '\(text)'", detail: nil)
                }
                return .double(d)
            case 16: return .integer(text == "t" ? 1 : 0) // bool
            case 1114, 1184: // timestamp, timestamptz
                guard let d = date(text) else {
                    throw ServerError(sqlState: nil, message: "unreadable timestamp '\(text)'", detail: nil)
                }
                return .date(d)
            default: return .text(text)
            }
        }
    }

    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try surviving { try writeOnce(body) }
    }

    private func writeOnce<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        var retries = 0
        while true {
            let c = try connected()
            let ex = Executor(connection: c)
            do {
                try ex.execute("BEGIN")
                let result: T
                do {
                    result = try body(ex)
                    try ex.execute("COMMIT")
                } catch {
                    _ = try? ex.execute("ROLLBACK")
                    throw error
                }
                return result
            } catch {
                // Two workers' transactions that conflict (40001) or wait on each other (40P01):
                // PostgreSQL aborts one, which is run again — never an error the user sees.
                if let state = Self.sqlState(error), state == "40001" || state == "40P01", retries < 50 {
                    retries += 1
                    Thread.sleep(forTimeInterval: Double.random(in: 0.002...0.02) * Double(min(retries, 10)))
                    continue
                }
                if PQstatus(c) != CONNECTION_OK || Self.isOutage(error) { throw Outage(message: Self.describe(error)) }
                if error is SearchError { throw error }
                throw SearchError.store("\(display): \(Self.describe(error))")
            }
        }
    }

    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try surviving { try readOnce(body) }
    }

    private func readOnce<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        let c = try connected()
        let ex = Executor(connection: c)
        do {
            // One snapshot for the whole read, as SQLite's readers see.
            try ex.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            defer { _ = try? ex.execute("COMMIT") }
            return try body(ex)
        } catch {
            if PQstatus(c) != CONNECTION_OK || Self.isOutage(error) { throw Outage(message: Self.describe(error)) }
            if error is SearchError { throw error }
            throw SearchError.store("\(display): \(Self.describe(error))")
        }
    }

    /// Applies the schema's migrations that this database lacks (with `.create`/`.write`), or
    /// checks that it has them all (`.read`). Refuses a database with migrations this Topiary
    /// does not know (written by a newer one) before changing anything.
    func migrate(access: StudyStore.Access) throws {
        let known = Schema.migrations.map(\.name)
        let applied: [String] = try read { ex in
            let exists: Int =
                try ex.scalar(
                    """
                    SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name\
                     = 'topiary_migrations'
                    """) ?? 0
            return exists == 0 ? [] : try ex.rows("SELECT identifier FROM topiary_migrations").map { $0["identifier"] }
        }
        if let unknown = applied.first(where: { !known.contains($0) }) {
            throw SearchError.store(
                "\(display) was written by a newer Topiary (unknown schema migration '\(unknown)'); refusing to touch it"
            )
        }
        if applied.isEmpty && access != .create {
            throw SearchError.store(
                "\(display): no Topiary store in this database (a study is created by `topiary search run`)")
        }
        if applied.count == known.count { return }
        if access == .read {
            throw SearchError.store(
                "\(display) is a store of an older Topiary; open it once with a command that writes (e.g. "
                    + "`topiary search run`) to upgrade it"
            )
        }
        try write { ex in
            // One migrator at a time, whichever process gets here first.
            try ex.execute("SELECT pg_advisory_xact_lock(7060617279)")
            try ex.execute(
                "CREATE TABLE IF NOT EXISTS topiary_migrations (identifier TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            let done = Set(try ex.rows("SELECT identifier FROM topiary_migrations").map { $0["identifier"] as String })
            for m in Schema.migrations where !done.contains(m.name) {
                for step in m.steps { for sql in Schema.sql(step, .postgresql) { try ex.execute(sql) } }
                try ex.execute("INSERT INTO topiary_migrations (identifier) VALUES (?)", [m.name])
            }
        }
    }
}
