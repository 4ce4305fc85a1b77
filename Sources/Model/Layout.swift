/// What a tensor is in the decoder, whatever its family calls it.
public enum TensorRole: String, Sendable, Equatable {
    case embedding, lmHead, finalNorm, finalNormBias
    case inputNorm, inputNormBias, postNorm, postNormBias
    /// Dense attention's projections, their qwen2 biases and qwen3 per-head norms.
    case q, k, v, o, qBias, kBias, vBias, qNorm, kNorm
    /// JetMoE's mixture of attention: one fused key/value projection (keys then values), the
    /// router, the experts' query (`in`) and output stacks, and the output bias.
    case kv, attentionRouter, attentionExpertsIn, attentionExpertsOut, attentionBias
    /// A dense MLP.
    case gate, up, down
    /// A mixture MLP: the router; one expert's projections (Mixtral-style, one tensor each);
    /// or stacks over every expert (JetMoE: `in` holds gate then up), and the output bias.
    case mlpRouter, expertGate, expertUp, expertDown, expertsIn, expertsOut, mlpBias
    /// A mixture's shared expert (Qwen3.5-MoE): its SwiGLU projections and the (1, C) gate
    /// whose sigmoid scales its output.
    case sharedGate, sharedUp, sharedDown, sharedExpertGate
    /// Nemotron-H's mixture: the sigmoid router's per-expert choice bias
    /// (`e_score_correction_bias`, a buffer: in the checkpoint, not a parameter, never trained),
    /// and the latent projections around the routed experts (`fc1_latent_proj` (L, C),
    /// `fc2_latent_proj` (C, L)).
    case routerCorrectionBias, latentIn, latentOut
    /// A Mamba2 mixer: the in-projection (z, x, B, C, dt), the depthwise convolution's weight
    /// (convDim, 1, K) and bias, the time-step bias, A_log and D (one per head), the gated
    /// norm's weight (I) and the out-projection.
    case mambaIn, mambaConv, mambaConvBias, mambaDtBias, mambaALog, mambaD, mambaNorm, mambaOut
    /// A Gated DeltaNet mixer: its in-projections (q, k, v; the gate z; β; the decay input a),
    /// the depthwise convolution (convDim, 1, K), the time-step bias and A_log (one per value
    /// head), the gated norm's weight (value head dim) and the out-projection.
    case deltaQKV, deltaZ, deltaB, deltaA, deltaConv, deltaDtBias, deltaALog, deltaNorm, deltaOut

    /// Norm weights that RMSNorm initialises to 1.
    public var isNormWeight: Bool {
        [.inputNorm, .postNorm, .finalNorm, .qNorm, .kNorm, .mambaNorm, .deltaNorm].contains(self)
    }
    /// A buffer: a tensor of the checkpoint that transformers does not count as a parameter and
    /// that training leaves as it is (its gradient is always zero).
    public var isBuffer: Bool { self == .routerCorrectionBias }
    /// The RMSNorm weights a zero-centred family (Qwen3.5) stores as w for a scale of 1 + w.
    public var isZeroCenteredNorm: Bool { [.inputNorm, .postNorm, .finalNorm, .qNorm, .kNorm].contains(self) }
}

/// The units of the teacher a pruning plan keeps, by what they index.
public enum PrunedUnit: Sendable, Equatable {
    case channels, heads, groups, neurons, experts, attentionExperts
    /// A mixture's shared expert's neurons.
    case sharedNeurons
    /// A Mamba2 mixer's axes: its heads (H), its inner width (heads × head channels, I), the
    /// rows its convolution mixes (x, then B and C kept whole) and its in-projection's rows (z,
    /// then the convolution's rows, then one time step per head).
    case mambaHeads, mambaInner, mambaConv, mambaProjection
    /// A Gated DeltaNet mixer's axes: its value heads, their channels (h·Dv + j), and the rows its
    /// convolution mixes (q and k kept whole, then the kept value heads' channels).
    case deltaHeads, deltaValues, deltaConv
    /// A Gated DeltaNet value head's channels (the same kept in every head: the gated norm's weight).
    case deltaChannels
}

/// What one axis of a tensor indexes: the unit whose kept subset pruning selects along it (nil:
/// the axis is kept whole), `width` elements per unit (head_dim for heads and groups), in
/// `copies` fused copies one after another (gate and up, keys and values).
public struct AxisRole: Sendable, Equatable {
    public var unit: PrunedUnit?
    public var width = 1
    public var copies = 1

    public init(_ unit: PrunedUnit?, width: Int = 1, copies: Int = 1) {
        self.unit = unit
        self.width = width
        self.copies = copies
    }

    public static let whole = AxisRole(nil)
    public static let channels = AxisRole(.channels)
    public static let neurons = AxisRole(.neurons)
    public static let experts = AxisRole(.experts)
    public static let sharedNeurons = AxisRole(.sharedNeurons)
    public static let attentionExperts = AxisRole(.attentionExperts)
    public static func heads(_ D: Int) -> AxisRole { AxisRole(.heads, width: D) }
    public static func groups(_ D: Int, copies: Int = 1) -> AxisRole { AxisRole(.groups, width: D, copies: copies) }
    public static let mambaHeads = AxisRole(.mambaHeads)
    public static let mambaInner = AxisRole(.mambaInner)
    public static let mambaConv = AxisRole(.mambaConv)
    public static let mambaProjection = AxisRole(.mambaProjection)
    public static let deltaHeads = AxisRole(.deltaHeads)
    public static let deltaValues = AxisRole(.deltaValues)
    public static let deltaConv = AxisRole(.deltaConv)
    public static let deltaChannels = AxisRole(.deltaChannels)
}

/// A tensor a family declares for a block: its HF name inside the layer, its role, shape and
/// what each axis indexes; `expert` for one expert's own tensor (Mixtral-style experts).
public struct TensorSpec: Sendable, Equatable {
    public var name: String
    public var role: TensorRole
    public var shape: [Int]
    public var dims: [AxisRole]
    public var expert: Int?

    public init(_ name: String, _ role: TensorRole, _ shape: [Int], _ dims: [AxisRole], expert: Int? = nil) {
        precondition(shape.count == dims.count, "\(name): \(shape.count) axes, \(dims.count) roles")
        self.name = name
        self.role = role
        self.shape = shape
        self.dims = dims
        self.expert = expert
    }
}

/// One named tensor inside a flat parameter buffer.
public struct ParameterEntry: Sendable, Equatable {
    /// The Hugging Face tensor name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public var name: String
    public var shape: [Int]
    /// Offset in floats from the start of the flat buffer.
    public var offset: Int
    /// What it is (nil in auxiliary layouts of arbitrary tensors).
    public var role: TensorRole?
    /// Its layer (nil outside the blocks) and, for one expert's own tensor, the expert.
    public var layer: Int?
    public var expert: Int?
    /// What each axis indexes (empty in auxiliary layouts).
    public var dims: [AxisRole] = []
    public var count: Int { shape.reduce(1, *) }
    /// Whether AdamW's decoupled weight decay applies (matrices yes; norms and biases no).
    public var decays: Bool { shape.count >= 2 }
}

/// The one table that carves a flat parameter (or gradient, or moment) buffer into HF-named
/// tensors, each with its role. The names come from the family files
/// (`Sources/Model/Families/`) and, for the parts every family shares (embedding, norms, head),
/// from here; everything else finds a tensor by its role.
///
/// Order inside a layer is chosen so that fused products are free: `q_proj`, `k_proj`,
/// `v_proj` are adjacent and form one ((H+2G)·D, C) matrix; `gate_proj`, `up_proj` form one
/// (2F, C) matrix.
public struct ParameterLayout: Sendable, Equatable {
    public private(set) var entries: [ParameterEntry] = []
    public private(set) var index: [String: Int] = [:]
    public private(set) var count = 0
    private var byRole: [RoleKey: Int] = [:]

    struct RoleKey: Hashable, Sendable {
        var role: TensorRole, layer: Int?, expert: Int?
    }

    public static let embeddingName = "model.embed_tokens.weight"
    public static let lmHeadName = "lm_head.weight"
    /// The prefix of layer l's tensors.
    public static func layerPrefix(_ l: Int) -> String { "model.layers.\(l)." }

    public init() {}

    /// A layout of arbitrary named tensors, in order (for auxiliary trainable parameters).
    public init(tensors: [(String, [Int])]) {
        for (name, shape) in tensors { add(name, shape) }
    }

    mutating func add(
        _ name: String, _ shape: [Int], role: TensorRole? = nil, layer: Int? = nil, expert: Int? = nil,
        dims: [AxisRole] = []
    ) {
        index[name] = entries.count
        if let role { byRole[RoleKey(role: role, layer: layer, expert: expert)] = entries.count }
        entries.append(
            ParameterEntry(
                name: name, shape: shape, offset: count, role: role, layer: layer, expert: expert, dims: dims))
        count += shape.reduce(1, *)
    }

    mutating func add(_ t: TensorSpec, prefix: String = "", layer: Int? = nil) {
        add(prefix + t.name, t.shape, role: t.role, layer: layer, expert: t.expert, dims: t.dims)
    }

    public func entry(_ name: String) -> ParameterEntry? { index[name].map { entries[$0] } }

    /// The tensor of a role (in layer `layer`, of expert `expert`), if the layout has one.
    public func entry(_ role: TensorRole, layer: Int? = nil, expert: Int? = nil) -> ParameterEntry? {
        byRole[RoleKey(role: role, layer: layer, expert: expert)].map { entries[$0] }
    }

    /// Offset of a role's tensor that the layout is known to hold.
    func offset(_ role: TensorRole, layer: Int? = nil, expert: Int? = nil) -> Int {
        guard let e = entry(role, layer: layer, expert: expert) else {
            preconditionFailure("layout has no \(role) tensor in layer \(layer.map(String.init) ?? "–")")
        }
        return e.offset
    }

    /// The layout of a decoder of any family: the embedding, each block's norms and the
    /// tensors its family declares for the block's mixer and channel mixer, the final norm and
    /// the head.
    public init(config c: ModelConfig) {
        let (C, V) = (c.hiddenSize, c.vocabSize)
        let family = c.family.definition, hasBias = family.hasNormBias
        add(family.embeddingName, [V, C], role: .embedding, dims: [.whole, .channels])
        func norm(_ name: String, _ weight: TensorRole, _ bias: TensorRole, prefix: String, layer: Int?) {
            add(prefix + name + ".weight", [C], role: weight, layer: layer, dims: [.channels])
            if hasBias { add(prefix + name + ".bias", [C], role: bias, layer: layer, dims: [.channels]) }
        }
        for (l, block) in c.blocks.enumerated() {
            let p = family.layerPrefix(l)
            // A block without a mixer (or channel mixer) has neither it nor the norm before it.
            if block.hasMixer {
                norm(family.mixerNormName, .inputNorm, .inputNormBias, prefix: p, layer: l)
                for t in family.mixerTensors(block.mixer, c) { add(t, prefix: p, layer: l) }
            }
            if block.hasChannelMixer {
                norm(family.channelMixerNormName, .postNorm, .postNormBias, prefix: p, layer: l)
                for t in family.channelMixerTensors(block.channelMixer, c) { add(t, prefix: p, layer: l) }
            }
        }
        norm(family.finalNormName, .finalNorm, .finalNormBias, prefix: "", layer: nil)
        if !c.tieWordEmbeddings { add(Self.lmHeadName, [V, C], role: .lmHead, dims: [.whole, .channels]) }
    }

    /// Floats of buffers (``TensorRole/isBuffer``), which the layout holds and transformers'
    /// `num_parameters()` does not count.
    public var bufferCount: Int { entries.filter { $0.role?.isBuffer == true }.reduce(0) { $0 + $1.count } }
    /// Parameters, as transformers counts them: every float of the layout but its buffers.
    public var parameterCount: Int { count - bufferCount }

    /// Parameters of the token embedding and the LM head.
    public var embeddingCount: Int {
        entries.filter { $0.role == .embedding || $0.role == .lmHead }.reduce(0) { $0 + $1.count }
    }
}

/// Offsets of one block's tensors in the flat buffer (resolved once, used every step).
struct LayerOffsets {
    var norm1: Int, norm1Bias: Int?
    /// Dense attention: fused q/k/v and o. JetMoE: `qkv` is `kv_proj` (keys then values).
    var qkv: Int, o: Int
    /// qwen2: the fused q/k/v bias ((H+2G)·D). qwen3: the per-head query and key norms (D each).
    var qkvBias: Int?, qNorm: Int?, kNorm: Int?
    var norm2: Int, norm2Bias: Int?
    /// Dense MLP: fused gate+up for SwiGLU, or up alone for squared ReLU; down.
    var mlpIn: Int, down: Int
    /// Mixture MLP: router and the expert stacks; JetMoE's output bias.
    var mlpExperts: ExpertOffsets?
    /// JetMoE's mixture of attention: router, per-expert query (`in`) and output projections.
    var attentionExperts: ExpertOffsets?
    /// The routers' tensor names (for errors).
    var mlpRouterName: String?, attentionRouterName: String?
    /// Whether the block has its mixer and its channel mixer (a heterogeneous layer may not).
    var hasMixer: Bool, hasChannelMixer: Bool
    /// A Mamba2 mixer's tensors.
    var mamba: MambaOffsets?
    /// A Gated DeltaNet mixer's tensors.
    var deltaNet: DeltaNetOffsets?

    init(layout: ParameterLayout, layer l: Int, block: Block) {
        func at(_ role: TensorRole, _ expert: Int? = nil) -> Int { layout.offset(role, layer: l, expert: expert) }
        func maybe(_ role: TensorRole) -> Int? { layout.entry(role, layer: l)?.offset }
        // 0 for a norm the block does not have (its sub-block is skipped).
        norm1 = block.hasMixer ? at(.inputNorm) : 0
        norm1Bias = maybe(.inputNormBias)
        norm2 = block.hasChannelMixer ? at(.postNorm) : 0
        norm2Bias = maybe(.postNormBias)
        hasMixer = block.hasMixer
        hasChannelMixer = block.hasChannelMixer
        (qkv, o, mlpIn, down) = (0, 0, 0, 0)
        qkvBias = maybe(.qBias)
        qNorm = maybe(.qNorm)
        kNorm = maybe(.kNorm)
        /// A stack's offset and the floats of one expert in it.
        func stack(_ role: TensorRole) -> (Int, Int) {
            let e = layout.entry(role, layer: l)!
            return (e.offset, e.count / e.shape[0])
        }
        switch block.mixer {
        case .none: break
        case let .attention(_, _, _, _, experts) where experts > 0:
            qkv = at(.kv)
            let (input, inputStride) = stack(.attentionExpertsIn), (output, outputStride) = stack(.attentionExpertsOut)
            attentionExperts = ExpertOffsets(
                router: at(.attentionRouter), input: input, inputStride: inputStride,
                output: output, outputStride: outputStride, bias: at(.attentionBias), count: experts)
            attentionRouterName = layout.entry(.attentionRouter, layer: l)?.name
        case .attention:
            qkv = at(.q)
            o = at(.o)
        case let .mamba(shape):
            mamba = MambaOffsets(
                shape: shape, input: at(.mambaIn), conv: at(.mambaConv), convBias: maybe(.mambaConvBias),
                dtBias: at(.mambaDtBias), aLog: at(.mambaALog), d: at(.mambaD), norm: at(.mambaNorm),
                output: at(.mambaOut))
        case let .deltaNet(shape):
            let input = at(.deltaQKV)
            precondition(
                at(.deltaA) == input + (shape.projectionWidth - shape.valueHeads)
                    * layout.entry(.deltaQKV, layer: l)!.shape[1],
                "the DeltaNet in-projections must be adjacent")
            deltaNet = DeltaNetOffsets(
                shape: shape, input: input, conv: at(.deltaConv), dtBias: at(.deltaDtBias), aLog: at(.deltaALog),
                norm: at(.deltaNorm), output: at(.deltaOut))
        }
        switch block.channelMixer {
        case .none: break
        case .dense:
            mlpIn = maybe(.gate) ?? at(.up)
            down = at(.down)
        case let .experts(E, _, _, shared):
            let bias = maybe(.mlpBias)
            if layout.entry(.expertsIn, layer: l) != nil {
                let (input, inputStride) = stack(.expertsIn), (output, outputStride) = stack(.expertsOut)
                mlpExperts = ExpertOffsets(
                    router: at(.mlpRouter), input: input, inputStride: inputStride,
                    output: output, outputStride: outputStride, bias: bias, count: E)
            } else {
                // One tensor per expert projection, laid out expert after expert (gate and up
                // adjacent; squared-ReLU experts have up alone).
                let inputRole: TensorRole =
                    layout.entry(.expertGate, layer: l, expert: 0) != nil ? .expertGate : .expertUp
                let input = at(inputRole, 0), output = at(.expertDown, 0)
                let stride = E > 1 ? at(inputRole, 1) - input : 0
                mlpExperts = ExpertOffsets(
                    router: at(.mlpRouter), input: input, inputStride: stride,
                    output: output, outputStride: stride, bias: bias, count: E)
            }
            mlpRouterName = layout.entry(.mlpRouter, layer: l)?.name
            mlpExperts?.correctionBias = maybe(.routerCorrectionBias)
            mlpExperts?.latentIn = maybe(.latentIn)
            mlpExperts?.latentOut = maybe(.latentOut)
            if shared > 0 {
                let gate = maybe(.sharedGate)
                mlpExperts?.shared = SharedExpertOffsets(
                    width: shared, input: gate ?? at(.sharedUp), down: at(.sharedDown), gate: maybe(.sharedExpertGate))
                if let gate {
                    precondition(at(.sharedUp) == gate + shared * layout.entry(.sharedGate, layer: l)!.shape[1])
                }
            }
        }
    }
}

/// Where a mixture's shared expert sits: its fused (2S, C) gate and up projection (squared
/// ReLU: its (S, C) up projection), its down projection (C, S) and its (1, C) gate, if it has one.
struct SharedExpertOffsets {
    var width: Int
    var input: Int, down: Int, gate: Int?
}

/// Where one Mamba2 mixer's tensors sit (``TensorRole/mambaIn`` …).
struct MambaOffsets {
    var shape: MambaShape
    var input: Int, conv: Int, convBias: Int?, dtBias: Int, aLog: Int, d: Int, norm: Int, output: Int
}

/// Where one Gated DeltaNet mixer's tensors sit (``TensorRole/deltaQKV`` …); `input` is the
/// fused (W, C) in-projection.
struct DeltaNetOffsets {
    var shape: DeltaNetShape
    var input: Int, conv: Int, dtBias: Int, aLog: Int, norm: Int, output: Int
}

/// Where one mixture's tensors sit: expert e's input matrix at `input + e·inputStride`, its
/// output matrix at `output + e·outputStride`.
struct ExpertOffsets {
    var router: Int
    var input: Int, inputStride: Int
    var output: Int, outputStride: Int
    var bias: Int?
    var count: Int
    var shared: SharedExpertOffsets? = nil
    /// The sigmoid router's choice bias (E), and the latent projections (L, C) and (C, L).
    var correctionBias: Int? = nil, latentIn: Int? = nil, latentOut: Int? = nil
    func input(_ e: Int) -> Int { input + e * inputStride }
    func output(_ e: Int) -> Int { output + e * outputStride }
}
