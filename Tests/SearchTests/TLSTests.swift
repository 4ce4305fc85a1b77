import Foundation
import Model
@testable import Search
import Testing

/// Issue 23, item 5: the PostgreSQL store over TLS through libpq (the system's OpenSSL). The test
/// server (scripts/services.sh) has a self-signed certificate and a role, `tlsonly`, that it
/// refuses without TLS: `sslmode=require` connects (encrypted, as the server's own view of the
/// connection says) and runs a study; `sslmode=disable` is refused with the server's words; a
/// server without TLS (the outage test's: so in that serialized suite) is refused under `require`
/// and connected to under `prefer`.
extension OutageTests {
    @Test func theStoreConnectsOverTLSWithASelfSignedCertificate() throws {
        guard let server = Services.postgres("theStoreConnectsOverTLSWithASelfSignedCertificate") else { return }
        // A database the role owns (PostgreSQL 15 lets only the owner create tables in `public`).
        let name = "tls_\(getpid())"
        _ = try Services.psql(server, "DROP DATABASE IF EXISTS \(name)")
        _ = try Services.psql(server, "CREATE DATABASE \(name) OWNER tlsonly")
        var u = URLComponents(string: server)!
        u.path = "/" + name
        u.user = "tlsonly"
        u.queryItems = [URLQueryItem(name: "sslmode", value: "require")]
        let store = try StudyStore(path: u.string!)
        let encrypted: Int? = try store.read { db in try db.scalar("SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()") }
        #expect(encrypted == 1, "the server sees a TLS connection")
        let f = try Fixture()
        defer { f.cleanup() }
        let runner = try SearchRunner(spec: try f.parse(f.spec(["strategy": ["name": "grid"]])), store: store,
                                      results: f.root.appendingPathComponent("results"), importanceCache: f.root.appendingPathComponent("importance"))
        runner.log = { _ in }
        let id = try runner.run(worker: "w", extend: false)
        #expect(try store.trials(study: id).allSatisfy { $0.state == "complete" } && !(try store.top(study: id)).isEmpty)
        store.close()
        // Without TLS the role is turned away, in the server's words.
        u.queryItems = [URLQueryItem(name: "sslmode", value: "disable")]
        let plain = try topiary(["results", "studies", "--db", u.string!])
        #expect(plain.status != 0 && plain.err.contains("cannot connect") && plain.err.contains("no encryption"), "\(plain.err)")
        // A server without TLS: refused under require, accepted under prefer.
        if let other = Services.env["TOPIARY_TEST_POSTGRES_OUTAGE"] {
            var o = URLComponents(string: other)!
            o.queryItems = [URLQueryItem(name: "sslmode", value: "require")]
            let refused = try topiary(["results", "studies", "--db", o.string!])
            #expect(refused.status != 0 && refused.err.contains("SSL"), "\(refused.err)")
            o.queryItems = [URLQueryItem(name: "sslmode", value: "prefer")]
            let preferred = try topiary(["results", "studies", "--db", o.string!])
            #expect(preferred.err.contains("no Topiary store in this database"), "connected: \(preferred.err)")
        }
    }
}
