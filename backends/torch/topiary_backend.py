#!/usr/bin/env python3
"""Topiary's reference PyTorch trial backend (docs/backends.md).

    python topiary_backend.py JOB.json

Reads a job written by Topiary, runs it with torch + transformers on the job's device and
dtype, and reports on stdout as JSON Lines (one object per line, flushed): `start`, `step`,
`eval`, `checkpoint`, `heartbeat`, `done`, or `error`. Exit status 0 when every student finished;
non-zero with an `error` line (and the message on stderr) otherwise.

Job kinds:
  distill     students (pruned by Topiary, Hugging Face folders) distilled from the teacher on
              the exact batches Topiary wrote, with its losses, schedule and AdamW; checkpoints
              in Topiary's training-checkpoint layout (so either engine resumes the other's).
  importance  Minitron importance scores of the teacher on the calibration batches Topiary wrote.

Only the arithmetic lives here: Topiary keeps the spec, the candidates, the pruning plans, the
batches, the store and the scores.
"""
import json
import math
import os
import shutil
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PROTOCOL = 1          # the job file's format
SERVE_PROTOCOL = 2    # the conversation of a resident backend (--serve)
# The job schemas Topiary generates from its job types (docs/schema/, checked by Swift's
# JobSchemaTests against the types): every job is checked against its kind's before it runs.
SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "schema")


KINDS = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def load_schema(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return json.load(f)


def check_value(value, s, where, source):
    """Raises ValueError naming the first place in `value` that schema `s` does not allow:
    missing, unknown, or of the wrong type (the subset of JSON Schema Topiary's schemas use)."""
    def fits(v, t):
        if t == "integer":
            return isinstance(v, int) and not isinstance(v, bool)
        if t == "number":
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        return isinstance(v, KINDS[t])

    t = s.get("type")
    types = t if isinstance(t, list) else ([t] if t else [])
    if types and not any(fits(value, x) for x in types):
        raise ValueError(f"{where}: expected {' or '.join(types)}, got {json.dumps(value)[:80]}")
    if isinstance(value, dict) and "properties" in s:
        props = s["properties"]
        for k in s.get("required", []):
            if k not in value:
                raise ValueError(f"{where}.{k}: missing (schema {source})")
        for k, v in value.items():
            if k not in props:
                if s.get("additionalProperties") is False:
                    raise ValueError(f"{where}.{k}: not a key of the job (schema {source})")
                continue
            check_value(v, props[k], f"{where}.{k}", source)
    if isinstance(value, list) and "items" in s:
        for i, v in enumerate(value):
            check_value(v, s["items"], f"{where}[{i}]", source)


def check_job(job):
    """Raises ValueError naming the first key of `job` that its kind's schema does not allow."""
    kinds = ("distill", "importance", "throughput", "block_scores", "local_distillation")
    if not isinstance(job, dict) or job.get("kind") not in kinds:
        raise ValueError(f"job kind {job.get('kind') if isinstance(job, dict) else job!r} is not one of {', '.join(kinds)}")
    name = f"{job['kind'].replace('_', '-')}-job.schema.json"
    check_value(job, load_schema(name), "job", name)


# The event schema (docs/schema/backend-events.schema.json): every line this backend prints is
# checked against it before it goes out, so a renamed field fails here, not in Topiary.
EVENTS = {b["properties"]["event"]["const"]: b for b in load_schema("backend-events.schema.json")["oneOf"]}


def check_event(line, where="event"):
    name = line.get("event") if isinstance(line, dict) else None
    if name not in EVENTS:
        raise ValueError(f"{where}: unknown event {name!r} (schema backend-events.schema.json)")
    check_value(line, EVENTS[name], f"{where} ({name})", "backend-events.schema.json")


# Several processes per trial (`gpus_per_trial` > 1, started by torchrun): FSDP2 shards every
# student, its AdamW moments and the teacher over the ranks; rank 0 alone speaks the protocol.
DIST = {"rank": 0, "world": 1}


def distributed():
    return DIST["world"] > 1


def emit(event, **fields):
    if DIST["rank"] != 0:
        return
    fields["event"] = event
    check_event(fields)
    sys.stdout.write(json.dumps(fields, allow_nan=True) + "\n")
    sys.stdout.flush()


class Heartbeat:
    """A `heartbeat` line at least every `seconds` while work goes on between other lines."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.last = time.monotonic()

    def beat(self, **fields):
        now = time.monotonic()
        if now - self.last >= self.seconds:
            emit("heartbeat", **fields)
            self.last = now


def load_tensors(path):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def device_and_dtype(job):
    device = torch.device(job["device"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[job["dtype"]]
    if device.type == "cpu" and dtype != torch.float32:
        raise ValueError("dtype bfloat16 needs a GPU device; on cpu use float32")
    return device, dtype


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# A resident backend (--serve) holds the teacher of its last distill job: the next job with the
# same teacher (path, files, dtype, attention, device) reuses it instead of loading it again.
TEACHER = {}


def stamp(path):
    """What identifies a checkpoint folder's contents: its files' names, sizes and times."""
    out = []
    for name in sorted(os.listdir(path)):
        if name.endswith((".safetensors", ".json")):
            st = os.stat(os.path.join(path, name))
            out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def teacher_for(path, device, dtype, attention):
    key = (os.path.realpath(path), stamp(path), str(device), str(dtype), attention)
    if TEACHER.get("key") == key:
        return TEACHER["model"], False
    TEACHER.clear()  # one teacher at a time: the previous one's memory goes first
    model = load_model(path, device, dtype, attention).eval()
    model.requires_grad_(False)
    TEACHER.update(key=key, model=model)
    return model, True


TOPIARY_REMOTE_CODE = "# Written by Topiary"


def remote_code_by_topiary(path):
    """Whether the checkpoint needs its own modeling code (its config has an `auto_map`: a
    heterogeneous nemotron-nas model, DeciLMForCausalLM) and every Python file it names is one
    Topiary wrote. Code from anywhere else is never run: such a folder is refused, naming the file."""
    with open(os.path.join(path, "config.json")) as f:
        auto_map = json.load(f).get("auto_map") or {}
    if not auto_map:
        return False
    for ref in sorted(set(auto_map.values())):
        module = str(ref).split(".")[0] + ".py"
        try:
            with open(os.path.join(path, module)) as f:
                first = f.readline()
        except OSError as e:
            raise ValueError(f"{path}: config.json's auto_map names {module}, which cannot be read ({e})")
        if not first.startswith(TOPIARY_REMOTE_CODE):
            raise ValueError(f"{os.path.join(path, module)} was not written by Topiary; the torch backend runs "
                             "no modeling code from elsewhere (trust_remote_code)")
    return True


def load_model(path, device, dtype=torch.float32, attention="eager"):
    from transformers import AutoModelForCausalLM

    from transformers import AutoConfig

    # On the CPU, torch's grouped matrix product of the experts needs 16-byte-aligned strides (not
    # every expert width has them): the experts run one by one there.
    extra = {}
    if remote_code_by_topiary(path):
        extra["trust_remote_code"] = True
    cfg = AutoConfig.from_pretrained(path, **extra)
    experts = getattr(cfg, "num_local_experts", 0) or getattr(cfg, "num_experts", 0)
    if experts and torch.device(device).type == "cpu":
        extra["experts_implementation"] = "eager"
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, attn_implementation=attention, **extra)
    return model.to(device)


# ---------------------------------------------------------------- the recipe, as Topiary's

def learning_rate(schedule, step, total, peak):
    """LearningRateSchedule.rate(step:total:peak:) of Sources/Model/Training/Schedule.swift."""
    warmup = schedule["warmup"]
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    name = schedule["name"]
    min_ratio = schedule["min_ratio"]
    if name == "constant":
        return peak
    if name == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if name == "wsd":
        # Half away from zero, as Swift's rounded() (Python's round() goes to even: 2.5 → 2);
        # the fraction is the job's (Topiary always sends it).
        decay_steps = max(1, int(math.floor(total * schedule["decay_fraction"] + 0.5)))
        decay_start = total - decay_steps
        if step <= decay_start:
            return peak
        progress = min(1.0, (step - decay_start) / decay_steps)
        return peak * (1 - (1 - min_ratio) * progress)
    raise ValueError(f"schedule '{name}' is not cosine, wsd or constant")


def local(t):
    """A tensor's own shard: a DTensor's local tensor (sharing its storage), else the tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


class AdamW:
    """Sources/Model/Training/AdamW.swift: decoupled weight decay on matrices only (ndim ≥ 2),
    global-norm clipping (scale clip/norm when norm > clip), bias corrections."""

    def __init__(self, named, settings):
        self.named = named
        self.s = settings
        # The moments are float32 whatever the weights are (bf16 students keep fp32 state).
        self.m = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
        self.v = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
        self.step = 0

    @torch.no_grad()
    def update(self, lr):
        # On sharded parameters (DTensors) each rank updates its own shard; the norm is the whole
        # gradient's, summed over the ranks.
        squares = sum(float((local(p.grad).double() ** 2).sum()) for _, p in self.named)
        if distributed():
            t = torch.tensor([squares], dtype=torch.float64)
            torch.distributed.all_reduce(t)
            squares = float(t[0])
        norm = math.sqrt(squares)
        if not math.isfinite(norm):
            raise FloatingPointError(f"gradient norm is {norm}")
        self.step += 1
        clip = self.s["gradient_clip"]
        scale = clip / norm if clip is not None and norm > clip else 1.0
        b1, b2, eps, wd = self.s["beta1"], self.s["beta2"], self.s["epsilon"], self.s["weight_decay"]
        c1 = 1 / (1 - b1 ** self.step)
        c2 = 1 / (1 - b2 ** self.step)
        for n, p in self.named:
            g = local(p.grad).float() * scale
            m, v = local(self.m[n]), local(self.v[n])
            p = local(p)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).add_((1 - b2) * g * g)
            decay = wd if p.ndim >= 2 else 0.0
            if p.dtype == torch.float32:
                p.sub_(lr * ((m * c1) / (torch.sqrt(v * c2) + eps) + decay * p))
            else:
                # Low-precision weights: the update in float32, rounded once into the weight.
                w = p.float()
                p.copy_(w - lr * ((m * c1) / (torch.sqrt(v * c2) + eps) + decay * w))
        return norm


def distillation_loss(student_logits, teacher_logprobs, targets, loss, count=None):
    """distillationLoss of Sources/Proxy/Distillation.swift: KL at τ scaled by τ² and the
    language-model loss, means over the positions whose target is not ignored (-1). With
    `count` (the whole batch's such positions), a micro-batch's sums are divided by it instead,
    so that the micro-batches' losses add up to the batch's."""
    tau, wkl, wlm = loss["temperature"], loss["kl"], loss["lm"]
    s = student_logits.reshape(-1, student_logits.shape[-1]).float()
    t = targets.reshape(-1)
    valid = t >= 0
    if count is None:
        count = int(valid.sum())
    if count == 0 or int(valid.sum()) == 0:
        zero = s.sum() * 0
        return zero, 0.0, 0.0
    s, lp = s[valid], teacher_logprobs.reshape(-1, teacher_logprobs.shape[-1])[valid]
    logq = torch.log_softmax(s / tau, dim=-1)
    if loss["direction"] == "forward":
        kl_rows = (lp.exp() * (lp - logq)).sum(-1)
    else:
        kl_rows = (logq.exp() * (logq - lp)).sum(-1)
    kl = kl_rows.sum() * tau * tau / count
    lm = torch.nn.functional.cross_entropy(s, t[valid].long(), reduction="sum") / count
    total = wkl * kl + wlm * lm
    return total, float(kl), float(lm)


# ---------------------------------------------------------------- checkpoints (Topiary's layout)

def save_checkpoint(model, opt, directory, run):
    """TrainingCheckpoint.save: DIR/step-NNNNNNNN/{config.json, model.safetensors,
    optimizer.safetensors, state.json} written to a temporary folder and renamed; DIR/latest names
    it (replaced atomically); older steps removed."""
    name = "step-%08d" % opt.step
    final = os.path.join(directory, name)
    if distributed():
        # Every rank gathers its shards (a collective); rank 0 writes the whole model, so that any
        # engine, at any rank count, resumes it.
        full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # noqa: E731
        weights = {n: full(p.detach()).cpu().contiguous() for n, p in opt.named}
        moments = {}
        for n, _ in opt.named:
            moments["m:" + n] = full(opt.m[n]).float().cpu().contiguous()
            moments["v:" + n] = full(opt.v[n]).float().cpu().contiguous()
        if DIST["rank"] != 0:
            torch.distributed.barrier()
            return final
        tmp = os.path.join(directory, ".%s.tmp-%d" % (name, os.getpid()))
        os.makedirs(tmp, exist_ok=True)
        model.config.save_pretrained(tmp)
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    else:
        tmp = os.path.join(directory, ".%s.tmp-%d" % (name, os.getpid()))
        os.makedirs(tmp, exist_ok=True)
        model.save_pretrained(tmp, safe_serialization=True)
        moments = {}
        for n, _ in opt.named:
            moments["m:" + n] = opt.m[n].detach().float().cpu().contiguous()
            moments["v:" + n] = opt.v[n].detach().float().cpu().contiguous()
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(tmp, extra)):
            os.remove(os.path.join(tmp, extra))
    save_file(moments, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"step": opt.step, "run": run}, f)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    latest_tmp = os.path.join(directory, ".latest.tmp-%d" % os.getpid())
    with open(latest_tmp, "w") as f:
        f.write(name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(latest_tmp, os.path.join(directory, "latest"))
    for old in os.listdir(directory):
        if old.startswith("step-") and old != name:
            shutil.rmtree(os.path.join(directory, old), ignore_errors=True)
    if distributed():
        torch.distributed.barrier()
    return final


def load_checkpoint(path, model, opt):
    """A Topiary training checkpoint into `model` and `opt`, whole or into each rank's shards."""
    state = json.load(open(os.path.join(path, "state.json")))
    weights = load_tensors(os.path.join(path, "model.safetensors"))
    moments = load_tensors(os.path.join(path, "optimizer.safetensors"))

    def into(dst, full):
        if hasattr(dst, "to_local"):
            from torch.distributed.tensor import distribute_tensor
            full = distribute_tensor(full.to(dst.dtype), dst.device_mesh, dst.placements).to_local()
            dst = dst.to_local()
        dst.copy_(full.to(dst.dtype))

    with torch.no_grad():
        for n, p in opt.named:
            if n not in weights:
                raise KeyError(f"{path}/model.safetensors lacks {n}")
            into(p, weights[n])
            into(opt.m[n], moments["m:" + n])
            into(opt.v[n], moments["v:" + n])
    opt.step = int(state["step"])


# ---------------------------------------------------------------- distill

def evaluate(teacher, student, validation, loss, device, dtype, autocast, rows=16):
    """Per validation window: NLL sum, counted tokens, and KL(teacher ‖ student) sum at τ (τ²
    scaled) — Topiary aggregates them into per-language losses and val_kl as its own engine does."""
    tokens, targets, langs = validation["tokens"], validation["targets"], validation["language"]
    with_kl = validation["with_kl"]
    tau = loss["temperature"]
    windows = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], rows):
            x = tokens[start:start + rows].long().to(device)
            y = targets[start:start + rows].long().to(device)
            with autocast():
                s = student(input_ids=x).logits.float()
                t = teacher(input_ids=x).logits.float()
            for r in range(x.shape[0]):
                valid = y[r] >= 0
                n = int(valid.sum())
                nll = torch.nn.functional.cross_entropy(s[r][valid], y[r][valid], reduction="sum")
                kl = 0.0
                if with_kl[int(langs[start + r])]:
                    lp = torch.log_softmax(t[r][valid] / tau, -1)
                    lq = torch.log_softmax(s[r][valid] / tau, -1)
                    kl = float((lp.exp() * (lp - lq)).sum()) * tau * tau
                windows.append([float(nll), n, kl])
    return windows


class PeakMemory:
    """The memory a job adds at its peak: on CUDA `torch.cuda.max_memory_allocated` since the
    job began; on the CPU the resident set's high-water mark (VmHWM, reset at the job's start
    through /proc/self/clear_refs) above the resident set at the start. What the process held
    before the job (a resident backend's teacher) is not counted."""

    def __init__(self, device):
        # transformers' modules are the process's, not the trial's: imported before the baseline.
        from transformers import AutoModelForCausalLM  # noqa: F401
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            self.base = self.status("VmRSS")
        self.device = device

    @staticmethod
    def status(key):
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def fields(self):
        if self.cuda:
            return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(self.device) - self.base), "memory_measure": "cuda"}
        peak = self.status("VmHWM")
        if peak is None or self.base is None:
            return {}
        return {"peak_memory_bytes": int(peak - self.base), "memory_measure": "rss"}


def start_distributed(device):
    """Joins the ranks torchrun started (WORLD_SIZE > 1): gloo on a CPU, NCCL on GPUs, one GPU per
    rank (LOCAL_RANK); returns the rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    DIST.update(rank=dist.get_rank(), world=dist.get_world_size())
    return device


def shard(model):
    """FSDP2: each decoder layer, then the rest, sharded over the ranks."""
    from torch.distributed.fsdp import fully_shard
    layers, _ = decoder_layers(model)
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def all_sum(values):
    if not distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()


def distill(job):
    device, dtype = device_and_dtype(job)
    device = start_distributed(device)
    memory = PeakMemory(device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else (lambda: torch.autocast(device.type, enabled=False))
    recipe = job["recipe"]
    loss = recipe["loss"]
    torch.manual_seed(0)
    ex = job["execution"]
    if distributed():
        teacher = load_model(job["teacher"], device, DTYPES[ex["teacher_dtype"]], ex["attention"]).eval()
        teacher.requires_grad_(False)
        teacher, loaded = shard(teacher), True
    else:
        teacher, loaded = teacher_for(job["teacher"], device, DTYPES[ex["teacher_dtype"]], ex["attention"])
    student_dtype = torch.bfloat16 if ex["student"] == "bf16" else torch.float32
    micro = ex["micro_batch"]
    batches = load_tensors(job["batches"]["file"])
    first, last = job["batches"]["from"], job["batches"]["to"]
    validation = load_tensors(job["validation"]["file"])
    validation["with_kl"] = job["validation"]["with_kl"]
    evaluate_at = set(job["evaluate_at"])
    every = job["checkpoint_every"]
    beat = Heartbeat(job["heartbeat_seconds"])
    students = []
    for s in job["students"]:
        model = load_model(s["init"], device, student_dtype, ex["attention"]).train()
        if ex["activation_checkpointing"]:
            model.config.use_cache = False
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if distributed():
            shard(model)
        named = [(n, p) for n, p in model.named_parameters()]
        opt = AdamW(named, recipe["adamw"])
        if s.get("resume"):
            load_checkpoint(s["resume"], model, opt)
            if opt.step != first:
                raise ValueError(f"{s['resume']} is at step {opt.step}, the job starts after step {first}")
        cfg = model.config
        moe = bool(getattr(cfg, "num_local_experts", 0) or getattr(cfg, "num_experts", 0))
        if cfg.model_type == "nemotron_h":
            # Its config always names experts; only `moe` layers have them, and its sigmoid router
            # has no load-balancing loss (transformers' Nemotron-H adds none; neither does Topiary).
            moe = False
        if moe and cfg.model_type not in ("mixtral", "qwen3_moe", "qwen3_5_moe_text"):
            raise ValueError(f"{cfg.model_type} students are not distilled by the torch backend yet "
                             "(mixtral, qwen3_moe, qwen3_5_moe_text and nemotron_h are)")
        students.append({"name": s["name"], "model": model, "opt": opt, "out": s["out"], "alive": True,
                         "moe": moe, "aux_coef": float(getattr(cfg, "router_aux_loss_coef", 0.0) or 0.0)})
    emit("start", protocol=PROTOCOL, backend="torch", torch=torch.__version__, device=str(device), dtype=str(dtype).replace("torch.", ""),
         students=[s["name"] for s in students], first=first + 1, last=last, teacher_loaded=loaded)
    world, rank = DIST["world"], DIST["rank"]
    if batches["tokens"].shape[1] % world:
        raise ValueError(f"the batch of {batches['tokens'].shape[1]} rows does not split over {world} ranks")
    # The teacher's forward: inference mode on one process; no_grad when FSDP gathers its shards.
    teacher_mode = torch.no_grad if distributed() else torch.inference_mode
    for i, step in enumerate(range(first + 1, last + 1)):
        x = batches["tokens"][i].long().to(device)
        y = batches["targets"][i].long().to(device)
        # Each rank its share of the rows; every loss is divided by the whole batch's token
        # count, and multiplied by the rank count that FSDP's gradient average divides by.
        count = int((y >= 0).sum())
        share = x.shape[0] // world
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        rows = x.shape[0]
        mb = micro if micro > 0 else rows
        alive = [s for s in students if s["alive"]]
        for s in alive:
            s["model"].zero_grad(set_to_none=False)
            s["sums"], s["bad"] = [0.0, 0.0, 0.0], None
        # Micro-batches of at most `mb` rows: the teacher once per micro-batch (inference mode),
        # each student's gradients accumulated; every loss is divided by the batch's token count,
        # so the sums equal one pass over the whole batch.
        for c0 in range(0, rows, mb):
            xc, yc = x[c0:c0 + mb], y[c0:c0 + mb]
            with teacher_mode(), autocast():
                t_logits = teacher(input_ids=xc).logits.float()
                t_logprobs = torch.log_softmax(t_logits / loss["temperature"], dim=-1)
            t_logprobs = t_logprobs.clone()  # an ordinary tensor, which autograd may save
            for s in alive:
                if s["bad"] is not None and not distributed():
                    continue
                model = s["model"]
                with autocast():
                    out = model(input_ids=xc, output_router_logits=True) if s["moe"] else model(input_ids=xc)
                total, kl, lm = distillation_loss(out.logits, t_logprobs, yc, loss, count=count)
                value = float(total)
                if not math.isfinite(value):
                    s["bad"] = f"student {s['name']} diverged at step {step}: distillation loss is {value}"
                    if not distributed():
                        continue  # (ranks go on with the backward: FSDP's collectives need every rank)
                if s["moe"]:
                    # Mixtures: the load-balancing loss (E · Σ f_e P_e over every router, unweighted in
                    # transformers' aux_loss) joins the gradient with the config's coefficient, as in
                    # Topiary's engine (per micro-batch, weighted by its share of the rows); the
                    # reported loss stays the distillation loss.
                    total = total + s["aux_coef"] * out.aux_loss * (xc.shape[0] / rows)
                (total * world if distributed() else total).backward()
                s["sums"] = [s["sums"][0] + value, s["sums"][1] + kl, s["sums"][2] + lm]
        for s in alive:
            if distributed():
                # Every rank learns of a divergence on any rank, and of the batch's whole loss.
                bad, *sums = all_sum([float(s["bad"] is not None)] + s["sums"])
                s["sums"] = sums
                if bad and s["bad"] is None:
                    s["bad"] = f"student {s['name']} diverged at step {step} on another rank"
            if s["bad"] is not None:
                s["alive"] = False
                emit("error", student=s["name"], step=step, message=s["bad"])
                continue
            opt = s["opt"]
            lr = learning_rate(recipe["schedule"], opt.step + 1, recipe["total_steps"], recipe["learning_rate"])
            try:
                norm = opt.update(lr)
            except FloatingPointError as e:
                s["alive"] = False
                emit("error", student=s["name"], step=step, message=f"student {s['name']} diverged at step {step}: {e}")
                continue
            value, kl, lm = s["sums"]
            emit("step", student=s["name"], step=step, train_loss=value, kl=kl, lm=lm, lr=lr, grad_norm=norm)
            beat.beat(step=step)
        for s in students:
            if s["alive"] and validation is not None and step in evaluate_at:
                s["model"].eval()
                # Windows in chunks of the micro-batch when there is one (each window is scored alone,
                # so the chunking changes no number, only the memory: two chunks' logits at a time).
                windows = evaluate(teacher, s["model"], validation, loss, device, dtype, autocast, rows=micro or 16)
                s["model"].train()
                tokens = sum(w[1] for w in windows)
                kl_tokens = sum(w[1] for w, lang in zip(windows, validation["language"].tolist()) if validation["with_kl"][lang])
                emit("eval", student=s["name"], step=step, windows=windows,
                     val_loss=sum(w[0] for w in windows) / max(tokens, 1), val_kl=sum(w[2] for w in windows) / max(kl_tokens, 1))
            if s["alive"] and ((every and step % every == 0) or step == last):
                path = save_checkpoint(s["model"], s["opt"], s["out"], job["run"])
                emit("checkpoint", student=s["name"], step=step, path=path)
    failed = [s["name"] for s in students if not s["alive"]]
    emit("done", failed=failed, **memory.fields())
    if distributed():
        torch.distributed.destroy_process_group()
    return 0 if not failed else 3


# ---------------------------------------------------------------- importance

def aggregate(values, how, dim):
    """Aggregation.reduce of Sources/Proxy/Importance.swift along `dim` (float64)."""
    if how == "mean":
        return values.abs().mean(dim)
    if how == "l2":
        return (values * values).sum(dim).sqrt()
    if how == "variance":
        return values.var(dim, unbiased=False)
    raise ValueError(f"aggregation '{how}' is not mean, l2 or variance")


def decoder_layers(model):
    inner = getattr(model, "model", model)
    return inner.layers, getattr(inner, "norm", None) or inner.norm_f  # (Nemotron-H's is norm_f)


def layer_parts(layer):
    """What a decoder layer holds, as the built-in engine's blocks: its attention's output
    projection, its dense MLP's down projection, its Mamba2 or Gated DeltaNet mixer's output
    projection (each None where it has none), and the norms before its mixer and its channel
    mixer. A Nemotron-H layer is one mixer behind one norm (`block_type`); a Qwen3.5 layer a
    DeltaNet or attention mixer then an MLP."""
    kind = getattr(layer, "block_type", None)
    if hasattr(layer, "mixer"):  # Nemotron-H
        mixer = layer.mixer
        return {"o": mixer.o_proj if kind == "full_attention" else None,
                "down": mixer.down_proj if kind == "mlp" else None,
                "mamba": mixer.out_proj if kind == "linear_attention" else None, "deltanet": None,
                "norm1": layer.norm if kind in ("full_attention", "linear_attention") else None,
                "norm2": layer.norm if kind in ("mlp", "moe") else None}
    linear = getattr(layer, "linear_attn", None)
    return {"o": layer.self_attn.o_proj if getattr(layer, "self_attn", None) is not None else None,
            "down": layer.mlp.down_proj, "mamba": None, "deltanet": linear.out_proj if linear is not None else None,
            "norm1": layer.input_layernorm, "norm2": layer.post_attention_layernorm}


def importance(job):
    """Importance.compute of Sources/Proxy/Importance.swift for dense and hybrid teachers: heads
    (L2 norm of each head's attention output before o_proj), neurons (the input of down_proj),
    channels (the outputs of every norm before a mixer or a channel mixer, and of the final norm,
    summed), Mamba2 channels (the gated norm's output, the input of out_proj), Gated DeltaNet
    value heads (the L2 norm of each head's share of that input) and value channels (that input
    channel by channel), each aggregated over the
    sequence then over the samples (zeros, or nothing for the hybrid scores, where a layer has no
    such unit); block importance (1 − mean cosine between a layer's input and output); and the
    validation loss with each layer skipped."""
    device, dtype = device_and_dtype(job)
    teacher = load_model(job["teacher"], device).eval()
    config = teacher.config
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    if config.model_type == "nemotron_h":  # its config always names experts; only `moe` layers have them
        experts = "moe" in config.layers_block_type
    if experts:
        raise ValueError("importance of mixtures of experts is not implemented by the torch backend yet")
    layers, final_norm = decoder_layers(teacher)
    L = len(layers)
    seq_how, batch_how = job["aggregation"]["sequence"], job["aggregation"]["batch"]
    cal = load_tensors(job["calibration"]["file"])["tokens"].long()
    S, T = cal.shape
    B = job["batch"]
    beat = Heartbeat(job["heartbeat_seconds"])
    captured = {}
    hooks = []

    def keep(name):
        def hook(module, inputs, output=None):
            value = inputs[0] if output is None else (output[0] if isinstance(output, tuple) else output)
            captured[name] = value.detach().float()
        return hook

    parts = [layer_parts(layer) for layer in layers]
    for l, (layer, part) in enumerate(zip(layers, parts)):
        for key, name in (("o", "attn"), ("down", "mlp"), ("mamba", "mamba"), ("deltanet", "deltanet")):
            if part[key] is not None:
                hooks.append(part[key].register_forward_pre_hook(keep(f"{name}{l}")))
        for key in ("norm1", "norm2"):
            if part[key] is not None:
                hooks.append(part[key].register_forward_hook(
                    lambda m, i, o, l=l, key=key: captured.__setitem__(f"{key}_{l}", o.detach().float())))
        hooks.append(layer.register_forward_pre_hook(keep(f"in{l}")))
        hooks.append(layer.register_forward_hook(lambda m, i, o, l=l: captured.__setitem__(f"out{l}", (o[0] if isinstance(o, tuple) else o).detach().float())))
    hooks.append(final_norm.register_forward_hook(lambda m, i, o: captured.__setitem__("final", o.detach().float())))
    H, F = config.num_attention_heads, config.intermediate_size
    Hv = getattr(config, "linear_num_value_heads", 0)
    head_seq = [[] for _ in range(L)]
    neuron_seq = [[] for _ in range(L)]
    mamba_seq = [[] for _ in range(L)]
    delta_seq = [[] for _ in range(L)]
    delta_channel_seq = [[] for _ in range(L)]
    channel_seq = [[] for _ in range(2 * L + 1)]
    cosine = [0.0] * L
    seen = 0
    with torch.no_grad():
        for start in range(0, S, B):
            x = cal[start:start + B].to(device)
            teacher(input_ids=x)
            rows = x.shape[0]
            zeros = torch.zeros(rows, T, 1, dtype=torch.float64, device=device)
            for l in range(L):
                if f"attn{l}" in captured:
                    a = captured[f"attn{l}"].double()                        # [rows, T, H*D]
                    D = a.shape[-1] // H
                    norms = a.reshape(rows, T, H, D).pow(2).sum(-1).sqrt()   # [rows, T, H]
                else:
                    norms = zeros.expand(rows, T, H)                         # no attention: zeros, as the engine's
                head_seq[l].append(aggregate(norms, seq_how, 1))              # [rows, H]
                m = captured[f"mlp{l}"].double() if f"mlp{l}" in captured else zeros.expand(rows, T, F)
                neuron_seq[l].append(aggregate(m, seq_how, 1))
                if f"mamba{l}" in captured:
                    mamba_seq[l].append(aggregate(captured[f"mamba{l}"].double(), seq_how, 1))
                if f"deltanet{l}" in captured:
                    o = captured[f"deltanet{l}"].double()
                    delta_seq[l].append(aggregate(o.reshape(rows, T, Hv, -1).pow(2).sum(-1).sqrt(), seq_how, 1))
                    delta_channel_seq[l].append(aggregate(o, seq_how, 1))
                for k, key in enumerate(("norm1", "norm2")):
                    if f"{key}_{l}" in captured:
                        channel_seq[2 * l + k].append(aggregate(captured[f"{key}_{l}"].double(), seq_how, 1))
                xi, yo = captured[f"in{l}"], captured[f"out{l}"]
                dot = (xi * yo).sum(-1)
                nn = ((xi * xi).sum(-1) * (yo * yo).sum(-1)).sqrt().clamp_min(1e-12)
                cosine[l] += float((dot / nn).double().sum())
            channel_seq[2 * L].append(aggregate(captured["final"].double(), seq_how, 1))
            seen += rows * T
            beat.beat(samples=start + rows)

    def over_samples(parts):
        return aggregate(torch.cat(parts, 0), batch_how, 0).tolist()     # samples are dim 0

    heads = [over_samples(p) for p in head_seq]
    neurons = [over_samples(p) for p in neuron_seq]
    channels = [sum(v) for v in zip(*[over_samples(p) for p in channel_seq if p])]
    hybrid = {}
    if any(mamba_seq):
        hybrid["mamba_channels"] = [over_samples(p) if p else [] for p in mamba_seq]
    if any(delta_seq):
        hybrid["deltanet_heads"] = [over_samples(p) if p else [] for p in delta_seq]
        hybrid["deltanet_channels"] = [over_samples(p) if p else [] for p in delta_channel_seq]
    block = [1 - c / seen for c in cosine]
    for h in hooks:
        h.remove()
    # Validation loss, whole and with each layer skipped (the layer returns its input).
    val = load_tensors(job["validation"]["file"])
    vt, vy = val["tokens"].long(), val["targets"].long()

    def loss_sum():
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, vt.shape[0], B):
                x, y = vt[start:start + B].to(device), vy[start:start + B].to(device)
                logits = teacher(input_ids=x).logits.float()
                valid = y >= 0
                total += float(torch.nn.functional.cross_entropy(logits[valid], y[valid], reduction="sum"))
                count += int(valid.sum())
        beat.beat()
        return total, count

    base, tokens = loss_sum()
    skipped = []
    for l, layer in enumerate(layers):
        def identity(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden
        h = layer.register_forward_hook(identity, with_kwargs=True)
        skipped.append(loss_sum()[0])
        h.remove()
    emit("importance", heads=heads, neurons=neurons, channels=channels, block_importance=block,
         loss_sum=base, loss_tokens=tokens, skipped_loss_sums=skipped, **hybrid)
    emit("done", failed=[])
    return 0


# ---------------------------------------------------------------- Puzzle's block library

def grouped_attention(x, w, heads, groups, d, cos, sin):
    """Llama's attention on x (B, T, C) with weights w["q"|"k"|"v"|"o"]: `heads` query heads over
    `groups` key/value groups of width d, rotary embeddings (cos, sin), causal SDPA (no padding)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    b, t, _ = x.shape
    q = (x @ w["q"].T).view(b, t, heads, d).transpose(1, 2)
    k = (x @ w["k"].T).view(b, t, groups, d).transpose(1, 2)
    v = (x @ w["v"].T).view(b, t, groups, d).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=d ** -0.5,
                                                           enable_gqa=heads != groups)
    return out.transpose(1, 2).reshape(b, t, heads * d) @ w["o"].T


def swiglu(x, w):
    """A SwiGLU MLP with weights w["gate"|"up"|"down"]."""
    return (torch.nn.functional.silu(x @ w["gate"].T) * (x @ w["up"].T)) @ w["down"].T


class VariantAttention(torch.nn.Module):
    """A layer's attention replaced by a variant's: all query heads over `groups` key/value groups,
    rotary embeddings, causal SDPA (the calibration windows have no padding). `hf`: called as
    transformers' Llama attention (keyword arguments, returns (output, None)); else as the
    nemotron-nas modeling file's (x, cos, sin, mask), returning the output."""

    def __init__(self, tensors, heads, groups, head_dim, hf):
        super().__init__()
        self.w = {k: tensors[f"self_attn.{k}_proj.weight"] for k in "qkvo"}
        self.heads, self.groups, self.d, self.hf = heads, groups, head_dim, hf

    def forward(self, *args, **kwargs):
        if self.hf:
            x = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs["position_embeddings"]
        else:
            x, cos, sin = args[0], args[1], args[2]
        out = grouped_attention(x, self.w, self.heads, self.groups, self.d, cos, sin)
        return (out, None) if self.hf else out


class VariantMLP(torch.nn.Module):
    def __init__(self, tensors):
        super().__init__()
        self.w = {k: tensors[f"mlp.{k}_proj.weight"] for k in ("gate", "up", "down")}

    def forward(self, x):
        return swiglu(x, self.w)


class Nothing(torch.nn.Module):
    """A removed attention or MLP: adds nothing to the residual stream."""

    def __init__(self, hf_attention=False):
        super().__init__()
        self.hf_attention = hf_attention

    def forward(self, *args, **kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        zero = torch.zeros_like(x)
        return (zero, None) if self.hf_attention else zero


def replaced(layer, block, tensors, config):
    """Swaps `layer`'s attention, MLP and norms for the variant's; returns the undo."""
    saved = {n: getattr(layer, n) for n in ("self_attn", "mlp") if hasattr(layer, n)}
    norms = {n: getattr(layer, n).weight.detach().clone() for n in ("input_layernorm", "post_attention_layernorm")
             if hasattr(layer, n)}
    flags = {n: getattr(layer, n) for n in ("has_attention", "has_mlp") if hasattr(layer, n)}
    hf = not hasattr(layer, "has_attention")  # transformers' Llama/Mistral layer, else nemotron-nas
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if block["groups"] is None:
        if hf:
            layer.self_attn = Nothing(hf_attention=True)
        else:
            layer.has_attention = False
    else:
        layer.self_attn = VariantAttention(tensors, config.num_attention_heads, block["groups"], head_dim, hf)
        layer.input_layernorm.weight.data.copy_(tensors["input_layernorm.weight"])
    if block["mlp"] is None:
        if hf:
            layer.mlp = Nothing()
        else:
            layer.has_mlp = False
    else:
        layer.mlp = VariantMLP(tensors)
        layer.post_attention_layernorm.weight.data.copy_(tensors["post_attention_layernorm.weight"])

    def undo():
        for n, m in saved.items():
            setattr(layer, n, m)
        for n, w in norms.items():
            getattr(layer, n).weight.data.copy_(w)
        for n, f in flags.items():
            setattr(layer, n, f)
    return undo


def block_scores(job):
    """BlockLibrary.replacementScores of Sources/Proxy/Heterogeneous.swift: for each block, the
    teacher with that one layer's attention and MLP (and their norms) replaced by the variant's,
    scored by the mean over calibration tokens of KL(teacher ‖ replaced) at temperature 1."""
    device, dtype = device_and_dtype(job)
    memory = PeakMemory(device)
    beat = Heartbeat(job["heartbeat_seconds"])
    teacher, _ = teacher_for(job["teacher"], device, dtype, "sdpa")
    layers, _ = decoder_layers(teacher)
    tokens = load_tensors(job["calibration"]["file"])["tokens"].long()
    B = job["batch"]
    batches = [tokens[i:i + B].to(device) for i in range(0, tokens.shape[0], B)]
    with torch.inference_mode():
        reference = [torch.log_softmax(teacher(input_ids=x).logits.float(), dim=-1) for x in batches]
        with safe_open(job["variants"]["file"], framework="pt", device=str(device)) as f:
            names = list(f.keys())
            for block in job["blocks"]:
                prefix = block["name"] + "/"
                tensors = {n[len(prefix):]: f.get_tensor(n).to(dtype) for n in names if n.startswith(prefix)}
                undo = replaced(layers[block["layer"]], block, tensors, teacher.config)
                try:
                    total, count = 0.0, 0
                    for x, lp in zip(batches, reference):
                        logq = torch.log_softmax(teacher(input_ids=x).logits.float(), dim=-1)
                        total += float((lp.exp() * (lp - logq)).sum(-1).double().sum())
                        count += lp.shape[0] * lp.shape[1]
                        beat.beat()
                finally:
                    undo()
                emit("block_score", layer=block["layer"], name=block["name"], kl=total / max(count, 1))
    emit("done", failed=[], **memory.fields())
    return 0


class StopForward(Exception):
    """Ends a teacher's forward pass once the layers a job needs have run."""


class TrainedBlock(torch.nn.Module):
    """One variant of a teacher layer as local distillation trains it: x + attention(norm(x)) with
    all query heads over `groups` groups (none when null), then + SwiGLU MLP(norm(·)) (none when
    null), Llama's numerics in float32; its parameters are the variant's tensors, by their names
    in the layer."""

    def __init__(self, tensors, block, config):
        super().__init__()
        self.names = sorted(tensors)
        self.params = torch.nn.ParameterList(torch.nn.Parameter(tensors[n].float().clone()) for n in self.names)
        self.groups, self.has_mlp = block["groups"], block["mlp"] is not None
        self.heads = config.num_attention_heads
        self.d = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps

    def w(self, name):
        return self.params[self.names.index(name)]

    def norm(self, x, name):
        return self.w(name) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def forward(self, x, cos, sin):
        if self.groups is not None:
            w = {k: self.w(f"self_attn.{k}_proj.weight") for k in "qkvo"}
            x = x + grouped_attention(self.norm(x, "input_layernorm.weight"), w, self.heads, self.groups, self.d, cos, sin)
        if self.has_mlp:
            w = {k: self.w(f"mlp.{k}_proj.weight") for k in ("gate", "up", "down")}
            x = x + swiglu(self.norm(x, "post_attention_layernorm.weight"), w)
        return x


def train_blocks(job, teacher, config, seen, device, beat):
    """The training loop of `local_distillation`: every block one AdamW step per batch, on the
    layer input and output the teacher's hooks put in `seen`. Returns the blocks."""
    blocks = []
    with safe_open(job["variants"]["file"], framework="pt", device=str(device)) as f:
        names = list(f.keys())
        for b in job["blocks"]:
            prefix = b["name"] + "/"
            tensors = {n[len(prefix):]: f.get_tensor(n) for n in names if n.startswith(prefix)}
            module = TrainedBlock(tensors, b, config).to(device)
            named = [(n, p) for n, p in zip(module.names, module.params)]
            blocks.append({"spec": b, "module": module, "opt": AdamW(named, job["adamw"])})
    tokens = load_tensors(job["batches"]["file"])["tokens"].long()
    steps = tokens.shape[0] if blocks else 0
    emit("start", protocol=PROTOCOL, backend="torch", torch=torch.__version__, device=str(device), dtype="float32",
         students=[b["spec"]["name"] for b in blocks], first=1, last=steps, teacher_loaded=True)
    for k in range(steps):
        seen.clear()
        try:
            with torch.no_grad():
                teacher.model(input_ids=tokens[k].to(device))
        except StopForward:
            pass
        lr = learning_rate(job["schedule"], k + 1, steps, job["learning_rate"])
        for b in blocks:
            x, y_teacher, cos, sin = seen[b["spec"]["layer"]]
            b["module"].zero_grad(set_to_none=False)
            for p in b["module"].params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            y = b["module"](x, cos, sin)
            loss = ((y - y_teacher) ** 2).sum() / ((y_teacher - x) ** 2).sum().clamp_min(1e-30)
            value = float(loss)
            if not math.isfinite(value):
                raise FloatingPointError(f"local distillation of {b['spec']['name']} diverged at step {k + 1}")
            loss.backward()
            norm = b["opt"].update(lr)
            emit("step", student=b["spec"]["name"], step=k + 1, train_loss=value, lr=lr, grad_norm=norm)
            beat.beat(step=k + 1)
    return blocks


def local_distillation(job):
    """LocalDistillation.train of Sources/Proxy/LocalDistillation.swift: one teacher pass per
    batch records the input and output (and the rotary cos/sin) of each layer it trains blocks
    of, stopping after the deepest; every block then takes
    one AdamW step (no weight decay) on ‖(y − x) − (y_teacher − x)‖² / ‖y_teacher − x‖² summed over
    the batch's tokens, at the cosine schedule's rate. A `step` line per block and step
    (student = the block's name); the trained tensors are written to `out`."""
    device, dtype = device_and_dtype(job)
    memory = PeakMemory(device)
    beat = Heartbeat(job["heartbeat_seconds"])
    teacher, _ = teacher_for(job["teacher"], device, dtype, "sdpa")
    layers, _ = decoder_layers(teacher)
    config = teacher.config
    seen = {}
    wanted = sorted({b["layer"] for b in job["blocks"]})

    def keep(l):
        def hook(module, args, kwargs, output):
            x = kwargs.get("hidden_states", args[0] if args else None)
            if "position_embeddings" in kwargs:
                cos, sin = kwargs["position_embeddings"]
            else:  # the nemotron-nas modeling file: layer(x, cos, sin, mask)
                cos, sin = args[1], args[2]
            y = output[0] if isinstance(output, tuple) else output
            seen[l] = (x.detach().float(), y.detach().float(), cos.detach(), sin.detach())
            if l == wanted[-1]:
                raise StopForward  # the layers after the deepest block's are not needed
        return hook

    # Only the layers this job trains blocks of are kept (a pass of a few layers holds a few).
    # The hooks come off whatever happens: a resident backend keeps this teacher for later jobs.
    hooks = [layers[l].register_forward_hook(keep(l), with_kwargs=True) for l in wanted]
    try:
        blocks = train_blocks(job, teacher, config, seen, device, beat)
    finally:
        for h in hooks:
            h.remove()
    out = {f"{b['spec']['name']}/{n}": p.detach().float().cpu().contiguous()
           for b in blocks for n, p in zip(b["module"].names, b["module"].params)}
    tmp = job["out"] + ".tmp"
    save_file(out, tmp, metadata={"format": "pt"})
    os.replace(tmp, job["out"])
    emit("done", failed=[], **memory.fields())
    return 0


# ---------------------------------------------------------------- throughput

class TimedLayer(torch.nn.Module):
    """One layer of Llama's numerics as a serving engine runs it, with its own key/value cache of
    `capacity` positions for `batch` sequences: RMSNorm, q/k/v projections (biases, per-head q/k
    RMSNorms where the job says), rotary embeddings, SDPA over the cache (grouped queries read
    their group's keys without copies), o_proj; RMSNorm, SwiGLU MLP. `groups` None: no attention;
    `mlp` None: no MLP (and no norm before the missing part)."""

    def __init__(self, spec, batch, capacity, device, dtype):
        super().__init__()
        lin = lambda i, o, bias=False: torch.nn.Linear(i, o, bias=bias, device=device, dtype=dtype)  # noqa: E731
        c, h, d = spec["hidden"], spec["heads"], spec["head_dim"]
        self.h, self.g, self.d, self.eps = h, spec["groups"], d, spec["rms_norm_eps"]
        if self.g is not None:
            self.norm1 = torch.nn.RMSNorm(c, eps=self.eps, device=device, dtype=dtype)
            self.q, self.k, self.v = lin(c, h * d, spec["qkv_bias"]), lin(c, self.g * d, spec["qkv_bias"]), lin(c, self.g * d, spec["qkv_bias"])
            self.o = lin(h * d, c)
            self.qn = torch.nn.RMSNorm(d, eps=self.eps, device=device, dtype=dtype) if spec["query_key_norm"] else None
            self.kn = torch.nn.RMSNorm(d, eps=self.eps, device=device, dtype=dtype) if spec["query_key_norm"] else None
            self.kc = torch.zeros(batch, self.g, capacity, d, device=device, dtype=dtype)
            self.vc = torch.zeros_like(self.kc)
            inv = 1.0 / (spec["rope_theta"] ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
            angles = torch.outer(torch.arange(capacity, device=device, dtype=torch.float32), inv)
            self.cos = torch.cat([angles.cos()] * 2, -1).to(dtype)
            self.sin = torch.cat([angles.sin()] * 2, -1).to(dtype)
        if spec["mlp"] is not None:
            self.norm2 = torch.nn.RMSNorm(c, eps=self.eps, device=device, dtype=dtype)
            self.gate, self.up, self.down = lin(c, spec["mlp"]), lin(c, spec["mlp"]), lin(spec["mlp"], c)
        self.has_mlp = spec["mlp"] is not None
        for p in self.parameters():
            if p.ndim > 1:
                torch.nn.init.normal_(p, std=0.02)

    def rotate(self, x, start):
        t = x.shape[2]
        cos, sin = self.cos[start:start + t], self.sin[start:start + t]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def forward(self, x, start):
        """x (B, T, C) at positions start … start + T − 1, the cache holding the `start` before."""
        if self.g is not None:
            b, t, _ = x.shape
            y = self.norm1(x)
            q = self.q(y).view(b, t, self.h, self.d).transpose(1, 2)
            k = self.k(y).view(b, t, self.g, self.d).transpose(1, 2)
            v = self.v(y).view(b, t, self.g, self.d).transpose(1, 2)
            if self.qn is not None:
                q, k = self.qn(q), self.kn(k)
            q, k = self.rotate(q, start), self.rotate(k, start)
            self.kc[:b, :, start:start + t] = k
            self.vc[:b, :, start:start + t] = v
            keys, values = self.kc[:b, :, :start + t], self.vc[:b, :, :start + t]
            # Causal within the new positions; every cached one is visible.
            out = torch.nn.functional.scaled_dot_product_attention(
                q, keys, values, is_causal=(t > 1 and start == 0), enable_gqa=self.h != self.g)
            x = x + self.o(out.transpose(1, 2).reshape(b, t, self.h * self.d))
        if self.has_mlp:
            y = self.norm2(x)
            x = x + self.down(torch.nn.functional.silu(self.gate(y)) * self.up(y))
        return x


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(repeats, body, device):
    """The median of `repeats` timings of `body` after one unmeasured run (the device synchronised)."""
    body()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        body()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_stack(layer_specs, job, device, dtype, head=None, beat=None):
    """Every layer of the stack (each its own weights and cache) timed in one pass: the prefill of
    the batch's prompts, a batch decode step at input + 1 and input + output − 1 cached positions;
    with `head` (final norm and LM head), it on one row per sequence added to each. Also the
    largest relative difference between a decode step's output and the prefill's at that position."""
    w = job["workload"]
    B, I, O = w["batch"], w["input"], w["output"]
    capacity = I + max(1, O - 1) + 1
    gen = torch.Generator(device="cpu").manual_seed(2)
    with torch.inference_mode():
        layers = [TimedLayer(s, B, capacity, device, dtype) for s in layer_specs]
        c = layer_specs[0]["hidden"] if layer_specs else head[0].normalized_shape[0]
        prompt = (torch.randn(B, I + 1, c, generator=gen) * 0.5).to(device=device, dtype=dtype)
        step = (torch.randn(B, 1, c, generator=gen) * 0.5).to(device=device, dtype=dtype)

        def run(x, start):
            for layer in layers:
                x = layer(x, start)
            if head is not None:
                x = head[1](head[0](x[:, -1:]))
            return x

        # The check: the prefill of I + 1 positions against the prefill of I, then one decode step.
        whole = run(prompt, 0)[:, -1].float()
        run(prompt[:, :I], 0)
        last = run(prompt[:, I:I + 1], I)[:, -1].float()
        error = float((whole - last).norm() / whole.norm().clamp_min(1e-30))
        prefill = median_seconds(job["repeats"], lambda: run(prompt[:, :I], 0), device)
        if beat:
            beat.beat()
        first = median_seconds(job["repeats"], lambda: run(step, I), device)
        at_last = I + max(1, O - 1) - 1
        last_step = median_seconds(job["repeats"], lambda: run(step, at_last), device)
    del layers
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return prefill, first, last_step, error


def roofline(device, dtype):
    """The device's FLOP/s on a large product and bytes/s on a large copy (read and write), in `dtype`."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    product = median_seconds(5, lambda: a @ b, device)
    count = 64 << 20
    src = torch.zeros(count // torch.tensor([], dtype=dtype).element_size() * 4, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    copy = median_seconds(5, lambda: dst.copy_(src), device)
    return 2 * n ** 3 / product, 2 * src.numel() * src.element_size() / copy


def machine_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return "cpu"


def throughput(job):
    """The block shapes of a spec's candidates timed as Topiary's built-in engine times them
    (Sources/Model/Throughput.swift): each in a stack of `depth` copies, each with its own weights
    and key/value cache, divided by the depth; what lies outside the blocks; whole models."""
    device = torch.device(job["device"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[job["dtype"]]
    memory = PeakMemory(device)
    beat = Heartbeat(job["heartbeat_seconds"])
    torch.manual_seed(0)
    flops, bandwidth = roofline(device, dtype)
    emit("machine", machine=machine_name(device),
         engine=f"torch {torch.__version__} ({device.type}, {job['dtype']}, SDPA; each block timed in a stack of the model's depth)",
         threads=torch.get_num_threads(), flops_per_second=flops, bytes_per_second=bandwidth)
    for part in job["blocks"]:
        depth = part["depth"]
        p, f, l, err = time_stack([part["layer"]] * depth, job, device, dtype, beat=beat)
        emit("timed", part="block", key=part["key"], prefill=p / depth, decode_first=f / depth, decode_last=l / depth,
             decode_error=err)
    for o in job["outside"]:
        head = (torch.nn.RMSNorm(o["hidden"], eps=o["rms_norm_eps"], device=device, dtype=dtype),
                torch.nn.Linear(o["hidden"], o["vocab"], bias=False, device=device, dtype=dtype))
        torch.nn.init.normal_(head[1].weight, std=0.02)
        p, f, l, err = time_stack([], job, device, dtype, head=head)
        emit("timed", part="outside", key=o["key"], prefill=p, decode_first=f, decode_last=l, decode_error=err)
    for m in job["models"]:
        c = m["layers"][0]["hidden"]
        head = (torch.nn.RMSNorm(c, eps=m["layers"][0]["rms_norm_eps"], device=device, dtype=dtype),
                torch.nn.Linear(c, m["vocab"], bias=False, device=device, dtype=dtype))
        torch.nn.init.normal_(head[1].weight, std=0.02)
        p, f, l, err = time_stack(m["layers"], job, device, dtype, head=head, beat=beat)
        emit("timed", part="model", key=m["name"], prefill=p, decode_first=f, decode_last=l, decode_error=err)
    emit("done", failed=[], **memory.fields())
    return 0


def run_job(path):
    """Runs one job file; returns the exit status protocol 1 would give."""
    job = json.load(open(path))
    if job.get("protocol") != PROTOCOL:
        raise ValueError(f"job protocol {job.get('protocol')} is not {PROTOCOL}")
    check_job(job)
    kind = job.get("kind")
    if kind == "distill":
        return distill(job)
    if kind == "importance":
        return importance(job)
    if kind == "throughput":
        return throughput(job)
    if kind == "block_scores":
        return block_scores(job)
    if kind == "local_distillation":
        return local_distillation(job)
    raise ValueError(f"unknown job kind '{kind}'")


def serve():
    """Protocol 2: says `ready`, then runs each job whose path comes on a line of stdin, each
    answered as protocol 1 answers it and ended by its `done` line; a job that fails says `error`
    (no student) and `done`, and the backend waits for the next. Ends at the end of stdin."""
    emit("ready", protocol=SERVE_PROTOCOL, backend="torch")
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            run_job(path)
        except Exception as e:  # noqa: BLE001 - every failure is reported to Topiary as a message
            message = f"{type(e).__name__}: {e}"
            emit("error", message=message)
            emit("done", failed=[])
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "--serve":
        return serve()
    if len(argv) == 3 and argv[1] == "--check-job":
        # Checks a job file against the schema and exits: 0 when it fits, 1 with the reason.
        try:
            with open(argv[2]) as f:
                check_job(json.load(f))
        except (ValueError, OSError) as e:
            sys.stderr.write(f"{argv[2]}: {e}\n")
            return 1
        print(f"{argv[2]}: fits its schema")
        return 0
    if len(argv) == 3 and argv[1] == "--check-events":
        # Checks a file of event lines against the event schema: 0 when every line fits.
        try:
            with open(argv[2]) as f:
                lines = [l for l in f.read().split("\n") if l.strip()]
            for i, l in enumerate(lines):
                check_event(json.loads(l), f"line {i + 1}")
        except (ValueError, OSError) as e:
            sys.stderr.write(f"{argv[2]}: {e}\n")
            return 1
        print(f"{argv[2]}: {len(lines)} lines fit the event schema")
        return 0
    if len(argv) != 2:
        sys.stderr.write("usage: topiary_backend.py JOB.json | --serve | --check-job JOB.json | --check-events EVENTS.jsonl\n")
        return 2
    try:
        return run_job(argv[1])
    except Exception as e:  # noqa: BLE001 - every failure is reported to Topiary as a message
        message = f"{type(e).__name__}: {e}"
        emit("error", message=message)
        sys.stderr.write(message + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
