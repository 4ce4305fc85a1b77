import ArgumentParser
import Foundation
import Model
import Proxy
import Search

struct StoreOptions: ParsableArguments {
    @Option(help: "Study store (default: TOPIARY_DB or results/topiary.sqlite).") var db: String?
    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Seconds to keep retrying a PostgreSQL store whose server stops answering mid-run, before giving "
                + "up (default: TOPIARY_DB_RETRY or 120; 0: at once).")
    )
    var dbRetry: Double?
    var path: String { StudyStore.defaultPath(db) }
    /// Opens the store for `access`: queries read only; only commands that create studies may create it.
    func open(_ access: StudyStore.Access) throws -> StudyStore {
        let store = try StudyStore(path: path, access: access)
        if let dbRetry { store.outageTolerance = dbRetry }
        return store
    }

    func validate() throws {
        if let dbRetry { try requireRange("--db-retry", dbRetry, 0...86_400, "seconds") }
    }
}

/// Options of every command that runs trials.
struct RunnerOptions: ParsableArguments {
    @Option(
        parsing: .unconditional, help: "Students distilled together per claim (they share the teacher's forward pass).")
    var studentsPerClaim = 4
    @Option(parsing: .unconditional, help: "Seconds without a heartbeat after which a running trial is taken back.")
    var staleAfter = 60.0
    @Option(
        help: ArgumentHelp(
            "Artifacts folder: trial checkpoints (weights + AdamW moments), recorded in the store relative to "
                + "it; on a cluster a folder every worker mounts (default: the spec's \"artifacts\", else --results).")
    ) var artifacts: String?
    @Option(help: "Results directory (the artifacts folder when neither --artifacts nor the spec names one).")
    var results = "results"
    @Option(help: "Importance cache directory (default: <artifacts>/importance).") var importanceCache: String?

    func artifactsRoot(_ spec: SearchSpec?) -> String {
        Artifacts.root(option: artifacts, spec: spec, fallback: results)
    }
    func importanceCacheDirectory(_ spec: SearchSpec?) -> String {
        importanceCache ?? artifactsRoot(spec) + "/importance"
    }

    func validate() throws {
        try requireRange("--students-per-claim", studentsPerClaim, 1...64, "students distilled together")
        try requireRange("--stale-after", staleAfter, 1...86_400, "seconds")
    }

    func runner(_ spec: SearchSpec, _ store: StudyStore) throws -> SearchRunner {
        let r = try SearchRunner(
            spec: spec, store: store, results: directoryURL(artifactsRoot(spec)),
            importanceCache: directoryURL(importanceCacheDirectory(spec)),
            studentsPerClaim: studentsPerClaim)
        r.staleAfter = staleAfter
        return r
    }
}

struct SearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search", abstract: "Run architecture searches.", subcommands: [SearchRun.self])
}

struct SearchRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract:
            "Run (or resume) the study a spec describes; rerunning the same command finishes an interrupted study.")

    @Argument(help: "Search spec (JSON).") var spec: String
    @Option(
        parsing: .unconditional,
        help: "Worker processes (this one included). On 2 cores, 1 with several students per claim is fastest.")
    var workers = 1
    @Flag(help: "Add to an existing study of the same name even though its spec differs.") var extend = false
    @Option(
        name: .customLong("report"),
        help: "Write the study's HTML report (topiary report) into this folder when the study ends.") var reportDir:
        String?
    @OptionGroup var options: RunnerOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try requireRange("--workers", workers, 1...256, "processes on this machine, this one included")
    }

    func run() throws {
        engine.apply()
        installInterruption()
        let helpers = Children()
        do { try search(helpers) } catch let interrupted as Interruption.Interrupted {
            // The helpers had SIGTERM with the signal: they give their trials back too.
            stopChildren(helpers.processes)
            print(
                "search run: \(interrupted); the trials it held are waiting again (no attempt counted) — rerun the same command to resume"
            )
            throw ExitCode(interrupted.exitCode)
        }
    }

    func search(_ helpers: Children) throws {
        let s = try loadSpec(spec, students: options.studentsPerClaim)
        let st = try store.open(.create)
        let runner = try options.runner(s, st)
        let start = Date()
        let study = try runner.prepare(extend: extend)
        // Helpers only where there is work left: a finished study starts none.
        let waiting = try st.trials(study: study).filter { $0.state == .waiting || $0.state == .running }.count
        let count = try st.study(named: s.study)?.state == "complete" ? 0 : min(workers - 1, max(0, waiting - 1))
        for i in 0..<count {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
            // The store travels in the environment, never in argv (`ps` shows argv to every user).
            p.arguments = [
                "worker", "--spec=\(spec)", "--artifacts=\(options.artifactsRoot(s))",
                "--importance-cache=\(options.importanceCacheDirectory(s))",
                "--study=\(s.study)", "--name=\(workerName())-\(i + 1)", "--students-per-claim",
                String(options.studentsPerClaim),
                "--stale-after", String(options.staleAfter), "--threads", "1"
            ]
            var environment = ProcessInfo.processInfo.environment
            environment["TOPIARY_DB"] = store.path
            if let retry = store.dbRetry { environment["TOPIARY_DB_RETRY"] = String(retry) }
            p.environment = environment
            try p.run()
            Interruption.register(p.processIdentifier, escalates: true)
            helpers.processes.append(p)
        }
        _ = try runner.run(worker: workerName(), extend: extend)
        for p in helpers.processes { p.waitUntilExit() }
        let row = try st.study(named: s.study)!
        let summary = try st.summary(row)
        print(
            String(
                format: "study %@ done in %.0f s: %d trials complete, %d pruned, %d failed; %d distillation steps",
                s.study,
                Date().timeIntervalSince(start), summary.complete, summary.pruned, summary.failed, summary.stepsRun)
                + (summary.tiePromotions > 0
                    ? " (\(summary.tieSteps) of them for \(summary.tiePromotions) candidate(s) promoted on a tie at a rung's cut)"
                    : ""))
        try ResultsTop.printTop(st, study: row, metric: nil, limit: 10, format: "table", noise: 0)
        if let reportDir {
            let dir = directoryURL(reportDir)
            let index = try StudyReport(store: st, study: s.study, teacher: teacherReference(st, study: s.study)).write(
                to: dir)
            print("report: \(index.path)")
        } else {
            print(
                "report: `topiary report "
                    + "\(s.study)\(store.db.map { " --db \(StudyStore.redacted($0))" } ?? "")` writes "
                    + "results/\(s.study)/report/index.html (or pass --report DIR to search run)"
            )
        }
    }
}

/// SIGINT and SIGTERM stop a run cleanly from now on (``Interruption``): its line is printed at once.
func installInterruption() {
    Interruption.install { line in
        FileHandle.standardError.write(Data("\n\(line)\n".utf8))
    }
}

/// The worker processes a command started.
final class Children { var processes: [Process] = [] }

/// Waits up to `grace` seconds for children sent SIGTERM to exit, then kills their groups.
func stopChildren(_ children: [Process], grace: Double = 30) {
    Interruption.stop(children, grace: grace)
    for p in children { Interruption.unregister(p.processIdentifier) }
}

/// How a process names itself in the store's `trial.worker`: host and pid, and under Slurm the
/// job and array task (`vm-1234-slurm-56_2`), so that `results show` says where a trial ran.
func workerName() -> String {
    let env = ProcessInfo.processInfo.environment
    var name = "\(ProcessInfo.processInfo.hostName)-\(getpid())"
    if let job = env["SLURM_ARRAY_JOB_ID"], let task = env["SLURM_ARRAY_TASK_ID"] {
        name += "-slurm-\(job)_\(task)"
    } else if let job = env["SLURM_JOB_ID"] {
        name += "-slurm-\(job)"
    }
    return name
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Claim and run waiting trials of a study from a store until none is left.")

    @Option(help: "The study to work on; its spec is read from the store.") var study: String?
    @Option(help: "Search spec of the study (optional: checked against the one the study was started with).") var spec:
        String?
    @Option(help: "Worker name (default: host-pid, with -slurm-JOB_TASK under Slurm).") var name: String?
    @Option(
        help: ArgumentHelp(
            "Wait up to this many seconds for the study to appear in the store (workers of a Slurm job may "
                + "start before its coordinator creates it).")
    ) var waitForStudy = 0.0
    @OptionGroup var options: RunnerOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if study == nil && spec == nil {
            throw ValidationError("name the study: --study NAME (its spec is read from the store), or --spec FILE")
        }
    }

    func run() throws {
        engine.apply()
        installInterruption()
        do { try work() } catch let interrupted as Interruption.Interrupted { throw ExitCode(interrupted.exitCode) }
    }

    func work() throws {
        let st = try store.open(.write)
        let given = try spec.map { try loadSpec($0, students: options.studentsPerClaim) }
        let studyName = study ?? given!.study
        if let given, given.study != studyName {
            throw SearchError.spec(
                file: given.file, path: "study",
                reason: "'\(given.study)' is not the study --study names ('\(studyName)')")
        }
        var found = try st.study(named: studyName)
        let deadline = Date().addingTimeInterval(waitForStudy)
        while found == nil && Date() < deadline {
            try Interruption.sleep(2)
            found = try st.study(named: studyName)
        }
        guard let row = found else {
            throw SearchError.store("no study '\(studyName)' in \(st.location); start it with `topiary search run`")
        }
        // A worker runs the study's own spec: a spec file that differs (a learning rate, a space)
        // would score the remaining trials under other rules than the ones already recorded.
        if let given, given.json != row.spec {
            throw SearchError.store(
                "\(given.file) differs from the spec study '\(studyName)' was started with (stored in \(st.location)); "
                    + "a worker runs the study's own spec: drop --spec, or start a new study under another name")
        }
        let s =
            try given
            ?? parseSpec(row.spec, file: "\(st.location): study '\(studyName)'", students: options.studentsPerClaim)
        let runner = try options.runner(s, st)
        guard try runner.teacherFingerprint() == row.teacherFingerprint else {
            throw SearchError.store(
                "the teacher at \(s.teacher) is not the one study '\(studyName)' was started with (fingerprint differs)"
            )
        }
        let worker = name ?? workerName()
        while true {
            let ran = try runner.work(study: row.id, worker: worker)
            if try runner.advance(study: row.id) { break }
            if ran == 0 { try Interruption.sleep(2) }
        }
    }
}
