import Foundation
import Model
import Proxy
import Testing

@testable import Search

/// Issue 25, item 2: how the torch backend holds a trial — sdpa or eager attention, micro-batches
/// with gradient accumulation, activation checkpointing, a bfloat16 teacher, bfloat16 students —
/// against the same 20 steps on the default settings.
@Suite(.serialized) struct TorchExecutionTests {
    /// The two students' step losses on torch with `execution` (default settings: nil).
    static func losses(_ run: SideBySide, _ execution: TrialExecution?, tag: String) throws -> [[Double]] {
        var spec = BackendSpec()
        spec.kind = run.backend.spec.kind
        if let execution { spec.execution = execution }
        let backend = ExternalBackend(spec: spec, log: { _ in })
        let result = try backend.distill(
            teacherPath: run.f.teacher.path,
            students: try run.students().enumerated().map { ($1.0, $1.1, nil, run.f.root.appendingPathComponent("\(tag)-\($0)")) },
            corpus: run.runner.corpus, recipe: run.recipe, startStep: 0, endStep: 20,
            jobDirectory: run.f.root.appendingPathComponent("job-\(tag)"), run: [:])
        return try (0..<2).map { i in
            let r = try result[i]!.get()
            #expect(r.steps.map(\.0) == Array(1...20), "\(tag): 20 steps")
            return r.steps.map(\.1)
        }
    }

    static func worst(_ a: [[Double]], _ b: [[Double]]) -> Double {
        zip(a.joined(), b.joined()).map { BackendTests.relative($0, $1) }.max() ?? .nan
    }

    /// The largest |Δloss| in nats.
    static func worstAbsolute(_ a: [[Double]], _ b: [[Double]]) -> Double {
        zip(a.joined(), b.joined()).map { abs($0 - $1) }.max() ?? .nan
    }

    @Test func executionOptionsKeepTheLosses() throws {
        guard let python = BackendTests.python("executionOptionsKeepTheLosses") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let run = try SideBySide(f, spec: try BackendTests.spec(f), python: python)
        #expect(run.recipe.batch == 4)
        let reference = try Self.losses(run, nil, tag: "sdpa")
        var eager = TrialExecution()
        eager.attention = "eager"
        let e = Self.worst(try Self.losses(run, eager, tag: "eager"), reference)
        // Micro-batches of 1 and 3 rows (the last one short) with gradient accumulation: one batch's
        // loss, to float32 rounding.
        var micro = TrialExecution()
        micro.microBatch = 1
        let m1 = Self.worst(try Self.losses(run, micro, tag: "micro1"), reference)
        micro.microBatch = 3
        let m3 = Self.worst(try Self.losses(run, micro, tag: "micro3"), reference)
        var checkpointed = TrialExecution()
        checkpointed.activationCheckpointing = true
        let c = Self.worst(try Self.losses(run, checkpointed, tag: "checkpointed"), reference)
        // Low precision: a bfloat16 teacher, and bfloat16 students with float32 moments.
        var teacher = TrialExecution()
        teacher.teacherDtype = "bfloat16"
        let t = Self.worstAbsolute(try Self.losses(run, teacher, tag: "bf16-teacher"), reference)
        var student = TrialExecution()
        student.student = "bf16"
        let s = Self.worstAbsolute(try Self.losses(run, student, tag: "bf16-student"), reference)
        print("reference losses (student 0):", reference[0].map { String(format: "%.4f", $0) }.joined(separator: " "))
        print(String(format: "torch execution vs sdpa/whole batch, worst relative step-loss difference over 20 steps × 2 students: "
                     + "eager %.1e, micro-batch 1 %.1e, micro-batch 3 %.1e, checkpointing %.1e; "
                     + "worst |Δloss| bf16 teacher %.1e nats, bf16 students %.1e nats",
                     e, m1, m3, c, t, s))
        #expect(e <= 1e-5, "sdpa vs eager: \(e)")
        #expect(m1 <= 1e-5 && m3 <= 1e-5, "micro-batches: \(m1), \(m3)")
        #expect(c <= 1e-5, "activation checkpointing: \(c)")
        // bfloat16 keeps 8 bits of mantissa: each logit is rounded by up to 2^-9 of its size, about
        // 0.01 for logits of a few units, and a KL or cross-entropy per token moves by at most that
        // much; the losses here are KLs of 0.04–0.12 nats between a teacher and its pruned student,
        // so the gate is absolute, 0.01 nats, not relative. They must differ (the option is real).
        #expect(t <= 1e-2 && t > 0, "bf16 teacher: \(t)")
        #expect(s <= 1e-2 && s > 0, "bf16 students: \(s)")
    }

    @Test func theSpecNamesBadExecutionKeys() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        for (backend, says) in [
            (["name": "torch", "attention": "flash"] as JSON, "backend.attention"),
            (["name": "torch", "micro_batch": -1], "backend.micro_batch"),
            (["name": "torch", "student": "fp8"], "backend.student"),
            (["name": "torch", "teacher_dtype": "int8"], "backend.teacher_dtype"),
            (["name": "torch", "activation_checkpointing": "yes"], "backend.activation_checkpointing"),
        ] {
            #expect { _ = try BackendTests.spec(f, backend: backend) } throws: { "\($0)".contains(says) }
        }
        let ok = try BackendTests.spec(f, backend: ["name": "torch", "attention": "eager", "micro_batch": 2, "student": "bf16",
                                                    "teacher_dtype": "bfloat16", "activation_checkpointing": true])
        #expect(ok.backend.execution.attention == "eager" && ok.backend.execution.microBatch == 2
                && ok.backend.execution.student == "bf16" && ok.backend.execution.teacherDtype == "bfloat16"
                && ok.backend.execution.activationCheckpointing)
    }

    /// Issue 25, item 4: a 12-claim study on the torch backend. Protocol 2 (the default) starts one
    /// backend for the worker and loads the teacher once, where protocol 1 loads it for every
    /// claim; the batches come from one shared file per step range, and both studies score every
    /// candidate alike.
    @Test func aResidentBackendLoadsTheTeacherOnce() throws {
        guard let python = BackendTests.python("aResidentBackendLoadsTheTeacherOnce") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        func run(_ version: Int) throws -> (loaded: Int, reused: Int, scores: [String: Double], out: String) {
            let spec = try f.writeSpec(f.spec([
                "budget": ["min": 1, "max": JSON(f.config.parameterCount)],
                "proxy": ["steps": 4, "batch_size": 4, "sequence_length": 16, "eval_tokens": 32, "learning_rate": 1e-3],
                "strategy": ["name": "grid"],
                "backend": ["name": "torch", "python": .string(python), "device": "cpu", "protocol": JSON(version)],
            ]), name: "protocol-\(version).json")
            let db = f.root.appendingPathComponent("protocol-\(version).sqlite").path
            let r = try topiary(["search", "run", spec, "--db", db,
                                 "--artifacts", f.root.appendingPathComponent("artifacts-\(version)").path,
                                 "--importance-cache", f.root.appendingPathComponent("importance").path,
                                 "--threads", "1", "--students-per-claim", "1"], in: f.root, timeout: 1200)
            #expect(r.status == 0, "\(r.out)\n\(r.err)")
            let lines = r.out.split(separator: "\n")
            let store = try StudyStore(path: db, access: .read)
            defer { store.close() }
            var scores: [String: Double] = [:]
            for t in try store.trials(study: try #require(try store.study(named: "tiny")).id) { scores[t.hash] = t.score }
            return (lines.filter { $0.hasSuffix(": teacher loaded") }.count, lines.filter { $0.hasSuffix(": teacher reused") }.count,
                    scores, r.out)
        }
        let t0 = Date()
        let resident = try run(2)
        let t1 = Date()
        let perClaim = try run(1)
        let t2 = Date()
        #expect(resident.scores.count == 12 && resident.scores.values.allSatisfy { $0.isFinite }, "\(resident.scores)")
        #expect(resident.loaded == 1 && resident.reused == 11,
                "protocol 2: \(resident.loaded) loads, \(resident.reused) reuses\n\(resident.out)")
        #expect(perClaim.loaded == 12 && perClaim.reused == 0, "protocol 1: \(perClaim.loaded) loads")
        #expect(resident.out.contains("resident process") && resident.out.contains("started (protocol 2)"))
        // The same tokens and the same arithmetic: every candidate's score equal across protocols.
        #expect(resident.scores.keys.sorted() == perClaim.scores.keys.sorted())
        for (hash, score) in resident.scores {
            #expect(score == perClaim.scores[hash], "\(hash): \(score) vs \(perClaim.scores[hash] ?? .nan)")
        }
        // One batches file for the 12 claims of the same steps.
        let batches = try FileManager.default.contentsOfDirectory(atPath: f.root.appendingPathComponent("artifacts-2/tiny/batches").path)
        #expect(batches.count == 1, "\(batches)")
        print(String(format: "resident backend, 12 claims: teacher loaded %d× in %.1f s (protocol 1: %d× in %.1f s)",
                     resident.loaded, t1.timeIntervalSince(t0), perClaim.loaded, t2.timeIntervalSince(t1)))
    }

    /// Issue 25, item 3: a trial on two processes (torchrun, FSDP2 over gloo on the CPU, each rank
    /// half of every batch) distils as one process does — 20 steps of two students, every step's
    /// loss and the validation loss within 1e-4 relative — and a checkpoint written at one rank
    /// count is continued at the other, both ways.
    @Test func twoRanksDistilAsOneAndResumeAcrossRankCounts() throws {
        guard let python = BackendTests.python("twoRanksDistilAsOneAndResumeAcrossRankCounts") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let run = try SideBySide(f, spec: try BackendTests.spec(f), python: python)
        func torch(_ ranks: Int, from start: Int, to end: Int, resume: [URL?] = [nil, nil], _ tag: String) throws -> [BackendTrialResult] {
            var spec = BackendSpec()
            spec.kind = run.backend.spec.kind
            spec.gpusPerTrial = ranks
            spec.protocolVersion = 1
            let result = try ExternalBackend(spec: spec, log: { _ in }).distill(
                teacherPath: f.teacher.path,
                students: try run.students().enumerated().map { ($1.0, $1.1, resume[$0], f.root.appendingPathComponent("\(tag)-\($0)")) },
                corpus: run.runner.corpus, recipe: run.recipe, startStep: start, endStep: end,
                jobDirectory: f.root.appendingPathComponent("job-\(tag)"), run: [:])
            return try (0..<2).map { try result[$0]!.get() }
        }
        func latest(_ tag: String) throws -> [URL?] {
            try (0..<2).map { try TrainingCheckpoint.latest(in: f.root.appendingPathComponent("\(tag)-\($0)")) }
        }
        let one = try torch(1, from: 0, to: 20, "one")
        let two = try torch(2, from: 0, to: 20, "two")
        #expect(two.allSatisfy { $0.steps.map(\.0) == Array(1...20) })
        let same = Self.worst(two, one, "2 ranks vs 1")
        _ = try torch(1, from: 0, to: 10, "one-half")
        let up = Self.worst(try torch(2, from: 10, to: 20, resume: try latest("one-half"), "up"), one, "1 → 2 ranks")
        _ = try torch(2, from: 0, to: 10, "two-half")
        let down = Self.worst(try torch(1, from: 10, to: 20, resume: try latest("two-half"), "down"), one, "2 → 1 rank")
        // The two-rank checkpoint is a whole model that the built-in engine loads.
        let ck = try #require(try TrainingCheckpoint.latest(in: f.root.appendingPathComponent("two-0")))
        #expect(try Checkpoint.load(ck).config == (try run.students())[0].1.config)
        print(String(format: "torch on 2 gloo ranks vs 1, 20 steps × 2 students: worst relative difference %.1e; "
                     + "resumed 1 → 2 ranks %.1e, 2 → 1 %.1e",
                     same, up, down))
    }

    /// The largest relative difference between `a`'s and `b`'s step losses and validation losses,
    /// student by student, each expected within 1e-4.
    static func worst(_ a: [BackendTrialResult], _ b: [BackendTrialResult], _ what: String) -> Double {
        var w = 0.0
        for (x, y) in zip(a, b) {
            let reference = Dictionary(uniqueKeysWithValues: y.steps)
            for (step, loss) in x.steps {
                let d = BackendTests.relative(loss, reference[step] ?? .nan)
                w = max(w, d)
                #expect(d <= 1e-4, "\(what) step \(step): \(loss) vs \(reference[step] ?? .nan)")
            }
            let v = BackendTests.relative(x.point.validation.overall, y.point.validation.overall)
            w = max(w, v)
            #expect(v <= 1e-4, "\(what) validation: \(x.point.validation.overall) vs \(y.point.validation.overall)")
        }
        return w
    }

    /// Issue 27: heterogeneous (nemotron-nas) students on two processes (FSDP2 over gloo, each
    /// decoder layer of the modeling file Topiary writes sharded) distil as on one: 20 steps, every
    /// step's loss and the validation loss within 1e-4 relative.
    @Test func twoRanksDistilHeterogeneousStudentsAsOne() throws {
        guard let python = BackendTests.python("twoRanksDistilHeterogeneousStudentsAsOne") else { return }
        let (f, teacher) = try PuzzleTests.fixture()
        defer { f.cleanup() }
        let run = try BackendTests.heterogeneousSideBySide(f, teacher: teacher, python: python)
        func torch(_ ranks: Int) throws -> [BackendTrialResult] {
            var spec = BackendSpec()
            spec.kind = run.backend.spec.kind
            spec.gpusPerTrial = ranks
            spec.protocolVersion = 1
            let result = try ExternalBackend(spec: spec, log: { _ in }).distill(
                teacherPath: teacher.path,
                students: try run.students().enumerated().map { ($1.0, $1.1, nil, f.root.appendingPathComponent("r\(ranks)-\($0)")) },
                corpus: run.runner.corpus, recipe: run.recipe, startStep: 0, endStep: 20,
                jobDirectory: f.root.appendingPathComponent("job-\(ranks)"), run: [:])
            return try (0..<2).map { try result[$0]!.get() }
        }
        let (one, two) = (try torch(1), try torch(2))
        #expect(two.allSatisfy { $0.steps.map(\.0) == Array(1...20) })
        let worst = Self.worst(two, one, "2 ranks vs 1")
        let ck = try #require(try TrainingCheckpoint.latest(in: f.root.appendingPathComponent("r2-0")))
        #expect(try Checkpoint.load(ck).config.layerVariants == (try run.students())[0].1.config.layerVariants)
        print(String(format: "torch on 2 gloo ranks vs 1, 20 steps × 2 heterogeneous students: worst relative difference %.1e", worst))
    }

    /// A resident backend killed between two jobs: the next job finds it gone, starts a fresh one
    /// and succeeds, with the same losses; Topiary is not taken down by the dead pipe.
    @Test func aResidentBackendKilledBetweenJobsIsReplaced() throws {
        guard let python = BackendTests.python("aResidentBackendKilledBetweenJobsIsReplaced") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let run = try SideBySide(f, spec: try BackendTests.spec(f), python: python)
        var spec = BackendSpec()
        spec.kind = run.backend.spec.kind
        spec.protocolVersion = 2
        let slot = ResidentBackend()
        defer { slot.close() }
        var lines: [String] = []
        let backend = ExternalBackend(spec: spec, log: { lines.append($0) }, resident: slot)
        func job(_ tag: String) throws -> [Double] {
            let result = try backend.distill(
                teacherPath: f.teacher.path,
                students: try run.students().enumerated().map { ($1.0, $1.1, nil, f.root.appendingPathComponent("\(tag)-\($0)")) },
                corpus: run.runner.corpus, recipe: run.recipe, startStep: 0, endStep: 4,
                jobDirectory: f.root.appendingPathComponent("job-\(tag)"), run: [:])
            return try (0..<2).flatMap { try result[$0]!.get().steps.map(\.1) }
        }
        let first = try job("first")
        let pid = try #require(slot.process?.pid)
        kill(pid, SIGKILL)
        while slot.process?.process.isRunning == true { Thread.sleep(forTimeInterval: 0.02) }
        let second = try job("second")
        #expect(second == first, "the same losses from the fresh backend")
        #expect(slot.process?.pid != pid)
        #expect(lines.filter { $0.contains("resident process") && $0.contains("started (protocol 2)") }.count == 2, "\(lines)")
    }
}
