import ArgumentParser
import Foundation
import Model
import Search

struct SlurmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm", abstract: "Run a study on a Slurm cluster.", subcommands: [SlurmSubmit.self])
}

struct SlurmSubmit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract:
            "Submit a study as a Slurm job array: task 0 coordinates (creates the study, advances rungs, and works), the others work.",
        discussion: """
            Writes a documented sbatch script to <artifacts>/<study>/slurm/ (or --script) and submits it with sbatch, \
            printing the job id. Every task works from the same PostgreSQL store (--db), the same artifacts folder (a \
            shared file system) and the submitting folder as its working directory (the spec's teacher and corpus paths \
            are read from there). The store URL travels in the job's environment (TOPIARY_DB), not in the script. \
            Cancelling the job (scancel) and submitting again resumes the study: trials whose worker died are taken back \
            after --stale-after seconds without a heartbeat, and nothing is scored twice.
            """)

    @Argument(help: "Search spec (JSON).") var spec: String
    @Option(
        help:
            "PostgreSQL store every task shares: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (default: TOPIARY_DB)."
    ) var db: String?
    @Option(parsing: .unconditional, help: "Array tasks (worker processes), the coordinator included.") var workers = 2
    @Option(help: "Slurm partition (default: the cluster's default).") var partition: String?
    @Option(help: "Time limit per task, as sbatch takes it (e.g. 4:00:00).") var time: String?
    @Option(parsing: .unconditional, help: "CPUs per task; also the engine's threads.") var cpusPerWorker = 1
    @Option(parsing: .unconditional, help: "GPUs per task (for a GPU trial backend).") var gpusPerWorker = 0
    @Option(help: "Artifacts folder on storage every node mounts (default: the spec's \"artifacts\", else results).")
    var artifacts: String?
    @Option(parsing: .unconditional, help: "Students distilled together per claim.") var studentsPerClaim = 4
    @Option(parsing: .unconditional, help: "Seconds without a heartbeat after which a running trial is taken back.")
    var staleAfter = 60.0
    @Option(help: "Where to write the script (default: <artifacts>/<study>/slurm/submit-<time>.sh).") var script:
        String?
    @Option(help: "The topiary binary the tasks run (default: this one).") var binary: String?
    @Flag(help: "Print the script and the sbatch command; submit nothing, write nothing.") var dryRun = false

    func validate() throws {
        try requireRange("--workers", workers, 1...10_000, "array tasks")
        try requireRange("--cpus-per-worker", cpusPerWorker, 1...1024, "CPUs")
        try requireRange("--gpus-per-worker", gpusPerWorker, 0...64, "GPUs")
        try requireRange("--students-per-claim", studentsPerClaim, 1...64, "students distilled together")
        try requireRange("--stale-after", staleAfter, 1...86_400, "seconds")
        if let partition { try Self.requireScriptSafe(partition, "--partition", spaces: false) }
        if let time { try Self.requireScriptSafe(time, "--time", spaces: false) }
        for (value, name) in [(artifacts, "--artifacts"), (script, "--script"), (binary, "--binary"), (spec, "SPEC")] {
            if let value { try Self.requireScriptSafe(value, name) }
        }
    }

    /// A value for the script, single-quoted for bash.
    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// Refuses a value with a control character (a newline ends an `#SBATCH` line and starts a
    /// command; every later directive is then ignored) or, for `#SBATCH` values that are not
    /// paths, with white space.
    static func requireScriptSafe(_ value: String, _ name: String, spaces: Bool = true) throws {
        if let problem = SearchSpec.controlCharacterProblem(value, lineSeparators: true) {
            throw ValidationError("\(name): \(problem); it would break the generated sbatch script")
        }
        if !spaces, value.contains(where: \.isWhitespace) {
            throw ValidationError(
                "\(name) \(value.debugDescription): contains white space, which an #SBATCH directive cannot hold")
        }
    }
    func run() throws {
        let s = try loadSpec(spec, students: studentsPerClaim)
        // A trial on several GPUs (backend.gpus_per_trial) runs its torchrun ranks inside one task.
        if s.backend.gpusPerTrial > 1 && gpusPerWorker < s.backend.gpusPerTrial {
            throw ValidationError(
                "--gpus-per-worker \(gpusPerWorker): the spec's backend.gpus_per_trial is \(s.backend.gpusPerTrial), "
                    + "and each task runs one trial's ranks; give --gpus-per-worker \(s.backend.gpusPerTrial)")
        }
        let url = StudyStore.defaultPath(db)
        guard StudyStore.schemes.contains(where: { url.lowercased().hasPrefix($0 + "://") }) else {
            throw ValidationError(
                "--db \(url): a Slurm study needs a PostgreSQL store (postgresql://USER@HOST[:PORT]/DATABASE) "
                    + "that every node reaches; a SQLite file cannot be shared between machines"
            )
        }
        // Checked now rather than in the tasks: a wrong URL fails here, not on every node.
        if !dryRun { try StudyStore(path: url, access: .create).close() }
        let cwd = FileManager.default.currentDirectoryPath
        let root = directoryURL(Artifacts.root(option: artifacts, spec: s, fallback: "results")).standardizedFileURL
            .path
        let specPath = URL(fileURLWithPath: spec).standardizedFileURL.path
        let exe =
            binary ?? (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        let logs = "\(root)/\(s.study)/slurm"
        for (value, name) in [
            (root, "the artifacts folder"), (specPath, "the spec's path"), (cwd, "the working directory"),
            (exe, "the topiary binary")
        ] {
            try Self.requireScriptSafe(value, name)
        }
        // No --db: the tasks read the store from TOPIARY_DB (exported by sbatch), so that the URL
        // and its password never appear in a process's argv.
        let common =
            "--artifacts \(Self.quote(root)) --students-per-claim \(studentsPerClaim) --stale-after "
            + "\(Int(staleAfter)) --threads \(cpusPerWorker)"
        var directives = [
            "--job-name=topiary-\(s.study)", "--array=0-\(workers - 1)", "--ntasks=1",
            "--cpus-per-task=\(cpusPerWorker)",
            "--output=\(logs)/%A_%a.out", "--open-mode=append"
        ]
        if gpusPerWorker > 0 { directives.append("--gpus-per-task=\(gpusPerWorker)") }
        if let partition { directives.append("--partition=\(partition)") }
        if let time { directives.append("--time=\(time)") }
        let text = """
            #!/bin/bash
            # Topiary study '\(s.study)' as a Slurm job array, written by `topiary slurm submit`.
            #
            # Task 0 is the coordinator: `topiary search run` creates the study in the store (or finds
            # it, when this job resumes a cancelled one), works on trials like the others, and advances
            # successive-halving rungs when one is finished. Tasks 1..\(workers - 1) are workers: `topiary
            # worker` waits for the study to appear, then claims waiting trials (PostgreSQL's FOR UPDATE
            # SKIP LOCKED: no two tasks take the same one) until the study is complete. Any task also
            # advances a finished rung, so the study ends even if the coordinator dies.
            #
            # The store URL comes from the job's environment (TOPIARY_DB, passed by sbatch --export),
            # never from this file. Trial checkpoints go under the artifacts folder below, which every
            # node must mount at the same path or name with --artifacts. A task killed mid-trial (node
            # failure, scancel, time limit) leaves its trials running without a heartbeat: after
            # \(Int(staleAfter)) s another task takes them back and reruns them; nothing is scored twice.
            \(directives.map { "#SBATCH \($0)" }.joined(separator: "\n"))
            set -euo pipefail
            : "${TOPIARY_DB:?TOPIARY_DB must name the PostgreSQL store of the study}"
            cd \(Self.quote(cwd))
            if [ "${SLURM_ARRAY_TASK_ID:-0}" = 0 ]; then
              exec \(Self.quote(exe)) search run \(Self.quote(specPath)) \(common)
            else
              exec \(Self.quote(exe)) worker --study=\(Self.quote(s.study)) --wait-for-study 3600 \(common)
            fi

            """
        let file = script ?? "\(logs)/submit-\(Self.stamp()).sh"
        let command = ["TOPIARY_DB=\(StudyStore.redacted(url))", "sbatch", "--parsable", "--export=ALL", file]
        if dryRun {
            print(text)
            print("# would run: " + command.joined(separator: " "))
            return
        }
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: file).deletingLastPathComponent(), withIntermediateDirectories: true)
        try AtomicFile.write(Data(text.utf8), to: URL(fileURLWithPath: file))
        chmod(file, 0o755)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["sbatch", "--parsable", "--export=ALL", file]
        var environment = ProcessInfo.processInfo.environment
        environment["TOPIARY_DB"] = url
        p.environment = environment
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { throw SearchError.store("cannot run sbatch: \(error)") }
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw SearchError.store(
                "sbatch \(file) failed (exit \(p.terminationStatus)): \(errors.trimmingCharacters(in: .whitespacesAndNewlines))"
            )
        }
        let job =
            output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ";").first.map(String.init)
            ?? output
        print(
            "submitted job \(job): \(workers) task(s) of study '\(s.study)' (script \(file), logs \(logs)/\(job)_<task>.out)"
        )
        print(
            "follow it: `topiary results studies --db \(StudyStore.redacted(url))`, `squeue -j \(job)`; stop "
                + "it: `scancel \(job)` (submitting again resumes)"
        )
    }

    static func stamp() -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyyMMdd-HHmmss"
        return f.string(from: Date())
    }
}
