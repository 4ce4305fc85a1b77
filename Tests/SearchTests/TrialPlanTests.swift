import Foundation
import Model
import Proxy
import Testing

@testable import Search

/// Issue 25, item 5: the memory plan of a trial on the torch backend, against hand counts and
/// against the peak the backend measures on this machine's CPU.
@Suite(.serialized) struct TrialPlanTests {
    /// Every term of a small plan, counted by hand from the formulas in TrialPlan's doc comment.
    @Test func thePlanIsItsFormulas() throws {
        let t = ModelConfig(family: .llama, vocabSize: 100, hiddenSize: 16, intermediateSize: 40, numHiddenLayers: 3,
                            numAttentionHeads: 4, numKeyValueHeads: 2, tieWordEmbeddings: true)
        var s = t
        s.numHiddenLayers = 2
        s.intermediateSize = 24
        // Parameters: embedding 100·16, per layer q 16·16 + k,v 2·(16·8) + o 16·16 + MLP 3·16·F + 2 norms of 16, final norm 16.
        let pt = 1600 + 3 * (256 + 256 + 256 + 3 * 16 * 40 + 32) + 16
        let ps = 1600 + 2 * (256 + 256 + 256 + 3 * 16 * 24 + 32) + 16
        #expect(t.parameterCount == pt && s.parameterCount == ps)
        var e = TrialExecution()
        let p = TrialPlan(teacher: t, student: s, execution: e, dtype: "float32", batch: 4, sequence: 8, students: 2)
        #expect(p.teacher == 4 * pt && p.studentWeights == 4 * ps && p.gradients == 4 * ps && p.optimizer == 8 * ps)
        #expect(p.tokens == 32)
        // Per token and layer: 6C + 3HD + 2GD + H + 4F = 96 + 48 + 16 + 4 + 96 = 260 (H·D = 16, G·D = 8);
        // the final norm 3C = 48; the loss 9V float32 values = 3600 bytes.
        let layer = 260
        #expect(p.activations == 32 * (4 * (2 * layer + 48) + 3600), "\(p.activations)")
        #expect(p.activationsCheckpointed == 32 * (4 * (2 * 16 + 48) + 3600))
        #expect(p.shardable == 4 * pt + 2 * 16 * ps)
        // The evaluation: two float32 logits of 16 windows of 8 tokens; the peak takes the larger.
        #expect(p.evaluation == 16 * 8 * 100 * 4 * 2
                && p.peak(checkpointed: true) == p.shardable + max(p.activationsCheckpointed, p.evaluation))
        #expect(p.peak(gpus: 2, checkpointed: false) == (p.shardable + 1) / 2 + p.activations)
        // bf16 students and teacher, eager attention (H·T more per layer), micro-batches of 1 row.
        e.student = "bf16"; e.teacherDtype = "bfloat16"; e.attention = "eager"; e.microBatch = 1
        let q = TrialPlan(teacher: t, student: s, execution: e, dtype: "bfloat16", batch: 4, sequence: 8, students: 1)
        #expect(q.teacher == 2 * pt && q.studentWeights == 2 * ps && q.gradients == 2 * ps && q.optimizer == 8 * ps)
        // Eager: + H·T = 32 and 2(HD − GD) = 16 per layer.
        #expect(q.tokens == 8 && q.activations == 8 * (2 * (2 * (layer + 32 + 16) + 48) + 3600))
        #expect(q.gpusNeeded(memory: q.peak(gpus: 3, checkpointed: false), checkpointed: false)! <= 3)
        #expect(TrialPlan.parseBytes("80GiB") == 80 << 30 && TrialPlan.parseBytes("1.5 GB") == 1_500_000_000
                && TrialPlan.parseBytes("4096") == 4096 && TrialPlan.parseBytes("lots") == nil)
    }

    /// The plan against the backend's measured peak (the resident set's high-water mark above the
    /// job's start) on the CPU, float32: a 33M-parameter teacher, a pruned student, batch 8 × 128.
    /// glibc's mmap threshold is fixed for the backend (MALLOC_MMAP_THRESHOLD_), so that a freed
    /// tensor goes back to the system and the resident set follows the live tensors, as
    /// `torch.cuda.max_memory_allocated` does on a GPU (left dynamic, the allocator keeps freed
    /// memory for reuse and the resident set overstates the peak by 20–30% here).
    @Test func predictionsMatchTheMeasuredPeakOnTheCPU() throws {
        guard let python = BackendTests.python("predictionsMatchTheMeasuredPeakOnTheCPU") else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let c = ModelConfig(family: .llama, vocabSize: 16384, hiddenSize: 512, intermediateSize: 1536, numHiddenLayers: 8,
                            numAttentionHeads: 8, numKeyValueHeads: 4, tieWordEmbeddings: true, initializerRange: 0.02)
        let teacher = DecoderModel(config: c)
        teacher.initialize(seed: 3)
        let teacherDir = f.root.appendingPathComponent("big-teacher")
        try Checkpoint.save(teacher, to: teacherDir)
        var target = c
        target.numHiddenLayers = 6
        target.intermediateSize = 768
        let corpus = try TokenShards(directory: f.corpus)
        var settings = ImportanceSettings()
        settings.samples = 2
        settings.sequence = 8
        settings.lossTokensPerLanguage = 0
        let (_, calibration) = try Importance.key(teacher: teacher, corpus: corpus, settings: settings)
        let scores = try Importance.compute(teacher: teacher, corpus: corpus, calibration: calibration, settings: settings)
        let student = try Pruning.prune(teacher: teacher, to: target, scores: scores)
        var recipe = DistillationRecipe(steps: 3)
        recipe.batch = 8
        recipe.sequence = 128
        recipe.evalTokens = 256
        setenv("MALLOC_MMAP_THRESHOLD_", "131072", 1)
        defer { unsetenv("MALLOC_MMAP_THRESHOLD_") }
        var lines: [String] = []
        for (checkpointed, tag) in [(false, "plain"), (true, "checkpointed")] {
            var spec = BackendSpec()
            spec.kind = .torch(python: python, script: nil)
            spec.protocolVersion = 1
            spec.execution.activationCheckpointing = checkpointed
            let result = try ExternalBackend(spec: spec, log: { _ in }).distill(
                teacherPath: teacherDir.path, students: [("s", student, nil, f.root.appendingPathComponent("out-\(tag)"))],
                corpus: corpus, recipe: recipe, startStep: 0, endStep: 3, jobDirectory: f.root.appendingPathComponent("job-\(tag)"),
                run: [:])
            let measured = try #require(try result[0]!.get().peakMemoryBytes)
            let plan = TrialPlan(teacher: c, student: target, execution: spec.execution, dtype: "float32", batch: 8, sequence: 128,
                                 students: 1)
            let predicted = plan.peak(checkpointed: checkpointed)
            let ratio = Double(predicted) / Double(measured)
            lines.append(String(format: "%@: predicted %@, measured %@ (ratio %.3f)",
                                tag, TrialPlan.gib(predicted), TrialPlan.gib(measured), ratio))
            #expect(abs(ratio - 1) <= 0.2, "\(tag): predicted \(predicted) bytes, measured \(measured)")
        }
        print("trial plan vs measured peak RSS on the CPU: " + lines.joined(separator: "; "))
    }
}

/// `search run` refuses a spec naming `backend.gpu_memory` whose trials cannot fit one GPU,
/// before anything is loaded or written, naming the candidate and the numbers; `topiary plan`
/// prints every candidate's needs.
@Suite struct TrialPlanRefusalTests {
    @Test func searchRunRefusesTrialsThatCannotFit() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.writeSpec(f.spec(["backend": ["name": "torch", "python": "/bin/false", "gpu_memory": "1MiB"]]),
                                   name: "tight.json")
        let db = f.root.appendingPathComponent("tight.sqlite")
        let r = try topiary(["search", "run", spec, "--db", db.path, "--artifacts", f.root.appendingPathComponent("a").path], in: f.root)
        #expect(r.status != 0)
        #expect(r.err.contains("backend.gpu_memory") && r.err.contains("needs") && r.err.contains("more than 0.00 GiB (90% of 0.00 GiB)"),
                "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: db.path), "nothing written")
        let roomy = try f.writeSpec(f.spec(["backend": ["name": "torch", "python": "/bin/false", "gpu_memory": "80GiB"]]),
                                    name: "roomy.json")
        let plan = try topiary(["plan", roomy, "--json", "--students-per-claim", "1"], in: f.root)
        #expect(plan.status == 0, "\(plan.err)")
        let j = try #require(JSON.parse(Data(plan.out.utf8)))
        let rows = try #require(j["candidates"]?.array)
        #expect(!rows.isEmpty && rows.allSatisfy { $0["gpus"]?.int == 1 && ($0["peak_bytes_one_gpu"]?.int ?? 0) > 0 })
        #expect(j["usable_bytes"]?.int == Int(Double(80 << 30) * 0.9))
        let bad = try topiary(["plan", roomy, "--gpu-memory", "lots"], in: f.root)
        #expect(bad.status != 0 && bad.err.contains("--gpu-memory"))
    }

    /// A spec whose trials run on 2 processes: `slurm submit` asks for as many GPUs per task, and
    /// writes them into the script's directives; protocol 2 is refused with it.
    @Test func severalGPUsPerTrialReachSlurmAndTheSpec() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.writeSpec(f.spec(["backend": ["name": "torch", "python": "/bin/false", "device": "cuda", "gpus_per_trial": 2]]),
                                   name: "two.json")
        let db = "postgresql://topiary@127.0.0.1:1/none"
        let refused = try topiary(["slurm", "submit", spec, "--db", db, "--dry-run"], in: f.root)
        #expect(refused.status != 0 && refused.err.contains("--gpus-per-worker 2"), "\(refused.err)")
        let dry = try topiary(["slurm", "submit", spec, "--db", db, "--gpus-per-worker", "2", "--dry-run"], in: f.root)
        #expect(dry.status == 0 && dry.out.contains("#SBATCH --gpus-per-task=2"), "\(dry.out)\n\(dry.err)")
        let parsed = try f.parse(f.spec(["backend": ["name": "torch", "python": "/bin/false", "gpus_per_trial": 2]]))
        #expect(parsed.backend.gpusPerTrial == 2 && parsed.backend.protocolVersion == 1)
        #expect(try parsed.backend.commandLine().contains("torch.distributed.run"))
        #expect { _ = try f.parse(f.spec(["backend": ["name": "torch", "python": "/bin/false", "gpus_per_trial": 2, "protocol": 2]])) }
            throws: { "\($0)".contains("backend.protocol") }
    }
}
