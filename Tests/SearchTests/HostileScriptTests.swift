import Foundation
import Model
import Search
import GRDB
import Testing

/// Issue 22, item 2: no value reaches a generated sbatch script with a control character. A
/// newline in the spec's artifacts folder or in --partition used to end an `#SBATCH` line and
/// start a command (`touch PWNED`), and every later directive was silently ignored.
@Suite struct HostileScriptTests {
    @Test func specPathsWithControlCharactersAreRefused() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        for (key, value) in [("artifacts", "art\ntouch PWNED\n#"), ("artifacts", "a\rb"), ("data", f.corpus.path + "\n#")] {
            let spec = try f.writeSpec(f.spec([key: .string(value)]))
            let r = try topiary(["spec", "check", spec], in: f.root)
            #expect(r.status != 0 && r.err.contains(key) && r.err.contains("control character"), "\(key) \(value.debugDescription): \(r.err)")
            let dry = try topiary(["slurm", "submit", spec, "--db", "postgresql://topiary@127.0.0.1:1/x", "--dry-run"], in: f.root)
            #expect(dry.status != 0 && !dry.out.contains("touch PWNED"), "dry run printed: \(dry.out)")
        }
        #expect(!FileManager.default.fileExists(atPath: f.root.appendingPathComponent("PWNED").path))
    }

    @Test(arguments: [
        ("--partition", "debug\ntouch PWNED6"), ("--partition", "debug gpu"), ("--time", "1:00\n#SBATCH --mem=1"),
        ("--artifacts", "/tmp/a\ntouch PWNED"), ("--script", "/tmp/s\u{2028}x.sh"), ("--binary", "/bin/topiary\u{7f}"),
    ])
    func submitOptionsWithControlCharactersAreRefused(_ option: String, _ value: String) throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.writeSpec(f.spec())
        let r = try topiary(["slurm", "submit", spec, "--db", "postgresql://topiary@127.0.0.1:1/x", option, value, "--dry-run"], in: f.root)
        #expect(r.status != 0, "\(option) \(value.debugDescription) was accepted: \(r.out)")
        #expect(r.err.contains(option) && !r.out.contains("PWNED"), "\(r.err)")
    }

    /// Issue 22, item 10: a study named `-rf` is refused (its workers used to die with "Missing
    /// value for '--study <study>'" and the coordinator ran alone); children get `--study=NAME`.
    @Test func studyNamesStartingWithADashAreRefused() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let r = try topiary(["spec", "check", try f.writeSpec(f.spec(["study": "-rf"]))], in: f.root)
        #expect(r.status != 0 && r.err.contains("study") && r.err.contains("starts with '-'"), "\(r.err)")
    }

    /// Ordinary odd values still work: spaces and quotes in paths are quoted in the script.
    @Test func oddButHarmlessPathsStillSubmit() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.writeSpec(f.spec())
        let r = try topiary(["slurm", "submit", spec, "--db", "postgresql://topiary@127.0.0.1:1/x", "--artifacts",
                             f.root.appendingPathComponent("it's a folder").path, "--partition", "gpu-a100", "--time", "4:00:00", "--dry-run"], in: f.root)
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("#SBATCH --partition=gpu-a100") && r.out.contains("#SBATCH --time=4:00:00"))
        #expect(r.out.contains("'\\''"), "the quote is escaped for bash")
    }
}

/// Issue 22, item 9: `distill --recipe` validates distill.json as strictly as a spec, and refuses
/// a teacher whose fingerprint differs from the recipe's unless --force.
@Suite(.serialized) struct HostileRecipeTests {
    @Test func recipeValuesOutOfRangeAreRefused() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let recipe = try DistillRecipeTests.exported(f)
        let original = try #require(JSON.parse(try Data(contentsOf: URL(fileURLWithPath: recipe)))?.object)
        let cases: [(String, (inout [String: JSON]) -> Void)] = [
            ("schedule.batch_size", { $0["schedule"] = .object(($0["schedule"]!.object!).merging(["batch_size": -4]) { $1 }) }),
            ("schedule.peak_learning_rate", { $0["schedule"] = .object(($0["schedule"]!.object!).merging(["peak_learning_rate": -1]) { $1 }) }),
            ("losses.logits_kl", { $0["losses"] = .object(($0["losses"]!.object!).merging(["logits_kl": -0.5]) { $1 }) }),
            ("language_sampling_alpha", { $0["language_sampling_alpha"] = -3 }),
            ("temperature", { $0["temperature"] = 0 }),
            ("schedule.name", { $0["schedule"] = .object(($0["schedule"]!.object!).merging(["name": "sawtooth"]) { $1 }) }),
            // Issue 23: distill.json carries the proxy's hidden-state weight, which a full run does not honour yet.
            ("losses.hidden", { $0["losses"] = .object(($0["losses"]!.object!).merging(["hidden": 0.5]) { $1 }) }),
        ]
        for (path, edit) in cases {
            var j = original
            edit(&j)
            try JSON.object(j).data().write(to: URL(fileURLWithPath: recipe))
            let out = f.root.appendingPathComponent("out-\(path)")
            let r = try topiary(["distill", "--recipe", recipe, "--tokens", "512", "--out", out.path], in: f.root)
            #expect(r.status != 0 && r.err.contains(path), "\(path): \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: out.path), "\(path): nothing is written")
        }
        // A wrong teacher fingerprint: refused, then run with --force.
        var j = original
        j["teacher_fingerprint"] = "0123456789abcdef"
        try JSON.object(j).data().write(to: URL(fileURLWithPath: recipe))
        let refused = try topiary(["distill", "--recipe", recipe, "--tokens", "512", "--out", f.root.appendingPathComponent("fp").path], in: f.root)
        #expect(refused.status != 0 && refused.err.contains("fingerprint") && refused.err.contains("--force"), "\(refused.err)")
        #expect(!FileManager.default.fileExists(atPath: f.root.appendingPathComponent("fp").path), "nothing is written")
        let forced = try topiary(["distill", "--recipe", recipe, "--tokens", "512", "--checkpoint-every", "1", "--force",
                                  "--out", f.root.appendingPathComponent("forced").path], in: f.root)
        #expect(forced.status == 0, "\(forced.err)")
    }
}

/// Issue 22 (minor): a study name read from a store is held to the spec's rule: `store copy`
/// of a study named `../../x` is refused (nothing copied), and `report` will not write outside
/// results/ for it.
@Suite struct HostileStoreNameTests {
    @Test func studyNamesFromAStoreAreCheckedLikeSpecNames() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["proxy": ["steps": 2, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3],
                                       "strategy": ["name": "random", "samples": 1]]))
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
        runner.log = { _ in }
        _ = try runner.run(worker: "w", extend: false)
        store.close()
        try DatabaseQueue(path: f.db).write { try $0.execute(sql: "UPDATE study SET name = '../../x'") }
        let target = f.root.appendingPathComponent("copy.sqlite").path
        let copy = try topiary(["store", "copy", "--from", f.db, "--to", target], in: f.root)
        #expect(copy.status != 0 && copy.err.contains("../../x") && copy.err.contains("not copied"), "\(copy.err)")
        if FileManager.default.fileExists(atPath: target) {
            let copied = try StudyStore(path: target, access: .read)
            #expect(try copied.studies().isEmpty, "nothing copied")
        }
        let report = try topiary(["report", "../../x", "--db", f.db, "--no-teacher"], in: f.root)
        #expect(report.status != 0 && report.err.contains("cannot name a folder under results/"), "\(report.err)")
        #expect(!FileManager.default.fileExists(atPath: f.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("x").path))
    }
}
