import Foundation
import Model
@testable import Proxy
import Testing

@Suite struct DistillationTests {
    /// Finite differences of the distillation loss with respect to the student logits.
    @Test(arguments: [(DistillationLoss.Direction.forward, 1.0, 0.0, 1.0), (.forward, 0.7, 0.3, 2.0), (.reverse, 1.0, 0.5, 1.5)])
    func gradientMatchesFiniteDifferences(_ direction: DistillationLoss.Direction, _ kl: Double, _ lm: Double, _ tau: Double) {
        let (N, V) = (3, 7)
        var rng = SeededGenerator(seed: 4)
        var s = (0..<(N * V)).map { _ in Float(rng.normal()) }
        let t = (0..<(N * V)).map { _ in Float(rng.normal() * 2) }
        var loss = DistillationLoss()
        loss.direction = direction; loss.kl = kl; loss.lm = lm; loss.temperature = tau
        let targets: [Int32] = [2, -100, 5]
        var lp = [Float](repeating: 0, count: N * V)
        let scratch = FloatBuffer(count: Parallel.threads * 2 * V)
        t.withUnsafeBufferPointer { tp in lp.withUnsafeMutableBufferPointer { logSoftmax(tp.baseAddress!, into: $0.baseAddress!, N: N, V: V, temperature: Float(tau)) } }
        func value(_ x: [Float]) -> Double {
            var x = x
            return x.withUnsafeMutableBufferPointer { xp in
                distillationLoss(xp.baseAddress!, teacherLogProbs: lp, targets: targets, N: N, V: V, loss: loss, gradient: false, scratch: scratch.pointer).loss
            }
        }
        var grad = s
        _ = grad.withUnsafeMutableBufferPointer { distillationLoss($0.baseAddress!, teacherLogProbs: lp, targets: targets, N: N, V: V, loss: loss, gradient: true, scratch: scratch.pointer) }
        for i in 0..<(N * V) {
            let h: Float = 1e-2
            let saved = s[i]
            s[i] = saved + h; let plus = value(s)
            s[i] = saved - h; let minus = value(s)
            s[i] = saved
            let numeric = (plus - minus) / Double(2 * h)
            #expect(abs(numeric - Double(grad[i])) < 2e-3 + 2e-2 * abs(numeric), "\(direction) [\(i)]: analytic \(grad[i]) numeric \(numeric)")
        }
        // The teacher against itself has zero KL.
        var same = t
        let selfKL = same.withUnsafeMutableBufferPointer {
            distillationLoss($0.baseAddress!, teacherLogProbs: lp, targets: targets, N: N, V: V, loss: loss, gradient: false, scratch: scratch.pointer).kl
        }
        #expect(abs(selfKL) < 1e-5)
    }

    @Test func studentsApproachTheTeacher() throws {
        let teacher = teacherModel()
        var target = teacher.config
        target.intermediateSize = 10
        target.numHiddenLayers = 2
        let scores = randomScores(teacher.config)
        let a = try Pruning.prune(teacher: teacher, to: target, scores: scores)
        let b = try Pruning.prune(teacher: teacher, to: target, scores: randomScores(teacher.config, seed: 3))
        let d = try Distiller(teacher: teacher, students: [("a", a), ("b", b)], batch: 2, sequence: 8, loss: DistillationLoss(),
                              learningRate: 1e-2, schedule: .constant(warmup: 0), steps: 40)
        let targets = DecoderModel.shiftedTargets(sampleTokens, batch: 2, sequence: 8)
        let first = try d.step(tokens: sampleTokens, targets: targets).mapValues { try $0.get() }
        var last = first
        for _ in 0..<39 { last = try d.step(tokens: sampleTokens, targets: targets).mapValues { try $0.get() } }
        for i in 0..<2 { #expect(last[i]!.kl < 0.5 * first[i]!.kl, "student \(i): KL \(first[i]!.kl) → \(last[i]!.kl)") }
        // Family mismatch is refused.
        let nemo = teacherModel(.nemotron)
        #expect(throws: ProxyError.self) { _ = try Distiller(teacher: teacher, students: [("n", nemo)], batch: 1, sequence: 4, loss: DistillationLoss(), learningRate: 1e-3, schedule: .constant(warmup: 0), steps: 1) }
    }

    /// Students run on separate workers: a student trained beside two others ends where it ends alone.
    @Test func aStudentBesideOthersEndsWhereItEndsAlone() throws {
        let teacher = teacherModel()
        var target = teacher.config
        target.intermediateSize = 12
        func student(_ seed: UInt64) throws -> DecoderModel {
            try Pruning.prune(teacher: teacher, to: target, scores: randomScores(teacher.config, seed: seed))
        }
        let targets = DecoderModel.shiftedTargets(sampleTokens, batch: 2, sequence: 8)
        func run(_ models: [(String, DecoderModel)]) throws -> [Double] {
            let d = try Distiller(teacher: teacher, students: models, batch: 2, sequence: 8, loss: DistillationLoss(),
                                  learningRate: 1e-2, schedule: .constant(warmup: 0), steps: 5)
            var kl: [Double] = []
            for _ in 0..<5 { kl = try d.step(tokens: sampleTokens, targets: targets).sorted { $0.key < $1.key }.map { try $0.value.get().kl } }
            return kl
        }
        let alone = try student(5), together = try student(5)
        let klAlone = try run([("x", alone)])
        let klTogether = try run([("a", try student(6)), ("x", together), ("b", try student(7))])
        #expect(abs(klAlone[0] - klTogether[1]) < 1e-5 * max(1, klAlone[0]), "\(klAlone[0]) vs \(klTogether[1])")
        #expect(zip(together.parameters.array, alone.parameters.array).map { abs($0 - $1) }.max()! < 1e-5)
    }

    /// A mixture student whose router turns NaN diverges alone, named; the others carry on.
    @Test func nanRouterStudentDivergesAlone() throws {
        let teacher = mixtureTeacher(.jetmoe)
        let bad = mixtureTeacher(.jetmoe, seed: 4), good = mixtureTeacher(.jetmoe, seed: 5)
        bad.tensor("model.layers.2.mlp.router.layer.weight")![0] = .nan
        let d = try Distiller(teacher: teacher, students: [("bad", bad), ("good", good)], batch: 2, sequence: 8, loss: DistillationLoss(),
                              learningRate: 1e-2, schedule: .constant(warmup: 0), steps: 2)
        let r = try d.step(tokens: sampleTokens, targets: DecoderModel.shiftedTargets(sampleTokens, batch: 2, sequence: 8))
        switch r[0]! {
        case .success: Issue.record("the NaN router went unnoticed")
        case let .failure(error):
            let text = "\(error)"
            #expect(text.contains("bad") && text.contains("step 1") && text.contains("model.layers.2.mlp.router.layer.weight"), "\(text)")
        }
        #expect(try r[1]!.get().loss.isFinite)
    }

    @Test func divergenceNamesStudentAndStep() throws {
        let teacher = teacherModel()
        let s = teacherModel(seed: 2), good = teacherModel(seed: 3)
        s.parameters[3] = .nan
        let before = good.parameters.array
        let d = try Distiller(teacher: teacher, students: [("bad", s), ("good", good)], batch: 2, sequence: 8, loss: DistillationLoss(),
                              learningRate: 1e-2, schedule: .constant(warmup: 0), steps: 2)
        let r = try d.step(tokens: sampleTokens, targets: DecoderModel.shiftedTargets(sampleTokens, batch: 2, sequence: 8))
        #expect(throws: ProxyError.diverged(student: "bad", step: 1, what: "distillation loss")) { _ = try r[0]!.get() }
        #expect(try r[1]!.get().loss.isFinite)
        #expect(good.parameters.array != before, "the healthy student still trains")
    }
}

@Suite struct HiddenDistillationTests {
    @Test(arguments: [HiddenLoss.Distance.cosine, .mse])
    func gradientsMatchFiniteDifferences(_ distance: HiddenLoss.Distance) throws {
        let teacher = teacherModel(seed: 1)
        var target = teacher.config
        target.hiddenSize = 12; target.numAttentionHeads = 3; target.numHiddenLayers = 2
        let student = try Pruning.prune(teacher: teacher, to: target, scores: randomScores(teacher.config))
        var loss = HiddenLoss()
        loss.weight = 0.7; loss.distance = distance; loss.layers = [[1, 2], [2, 4]]
        let (B, T) = (2, 8)
        let projector = try HiddenProjector(loss: loss, student: student.config, teacher: teacher.config, rows: B * T)
        let ta = Activations(config: teacher.config, batch: B, sequence: T), sa = Activations(config: student.config, batch: B, sequence: T)
        try teacher.forward(tokens: sampleTokens, ta)
        func value() throws -> Double {
            try student.forward(tokens: sampleTokens, sa)
            return 0.7 * projector.evaluate(student: sa, teacher: ta, gradient: false).loss
        }
        try student.forward(tokens: sampleTokens, sa)
        let r = projector.evaluate(student: sa, teacher: ta, gradient: true)
        sa.logits.update(repeating: 0)   // only the hidden term
        student.zeroGradients()
        student.backward(sa, residualGradients: r.residualGradients)
        let h: Float = 1e-2
        var rng = SeededGenerator(seed: 3)
        // Student parameters, through the backward pass.
        for e in student.layout.entries where e.name.contains("layers.0.") || e.name.contains("embed") {
            for _ in 0..<3 {
                let i = e.offset + Int(rng.next() % UInt64(e.count))
                let saved = student.parameters[i]
                student.parameters[i] = saved + h; let plus = try value()
                student.parameters[i] = saved - h; let minus = try value()
                student.parameters[i] = saved
                let numeric = (plus - minus) / Double(2 * h), analytic = Double(student.gradients[i])
                #expect(abs(numeric - analytic) < 1e-3 + 3e-2 * abs(numeric), "\(distance) \(e.name): \(analytic) vs \(numeric)")
            }
        }
        // The learned maps.
        try student.forward(tokens: sampleTokens, sa)
        _ = projector.evaluate(student: sa, teacher: ta, gradient: true)
        let analyticW = projector.gradientsForTesting
        for _ in 0..<8 {
            let i = Int(rng.next() % UInt64(projector.weights.count))
            let saved = projector.weights[i]
            projector.weights[i] = saved + h; let plus = try value()
            projector.weights[i] = saved - h; let minus = try value()
            projector.weights[i] = saved
            let numeric = (plus - minus) / Double(2 * h)
            #expect(abs(numeric - Double(analyticW[i])) < 1e-3 + 3e-2 * abs(numeric), "\(distance) W[\(i)]: \(analyticW[i]) vs \(numeric)")
        }
    }

    @Test func hiddenTermTrainsWithTheStudent() throws {
        let teacher = teacherModel()
        var target = teacher.config
        target.numHiddenLayers = 2
        let s = try Pruning.prune(teacher: teacher, to: target, scores: randomScores(teacher.config))
        var loss = DistillationLoss()
        loss.hidden.weight = 1; loss.hidden.distance = .mse
        let d = try Distiller(teacher: teacher, students: [("s", s)], batch: 2, sequence: 8, loss: loss, learningRate: 1e-2,
                              schedule: .constant(warmup: 0), steps: 30)
        let targets = DecoderModel.shiftedTargets(sampleTokens, batch: 2, sequence: 8)
        let first = try d.step(tokens: sampleTokens, targets: targets)[0]!.get()
        var last = first
        for _ in 0..<29 { last = try d.step(tokens: sampleTokens, targets: targets)[0]!.get() }
        #expect(first.hidden > 0 && last.hidden < 0.7 * first.hidden, "hidden \(first.hidden) → \(last.hidden)")
    }
}
