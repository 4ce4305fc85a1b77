#!/usr/bin/env python3
"""Outside check of checkpoints Topiary wrote (an export's candidates, a pruned model, a teacher):
each DIR loads in transformers (AutoModelForCausalLM, in the dtype it was saved in) and gives the
logits of `topiary model logits DIR`, and transformers' parameter count equals `topiary model info`.

    .venv/bin/python scripts/check_checkpoint_load.py DIR [DIR ...] [--topiary .build/release/topiary] [--seq 32]

`--seq`: tokens per sequence (2 sequences); longer than a Nemotron-H config's chunk_size, it crosses
transformers' scan chunks.
"""
import argparse
import json
import os
import subprocess
import tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--topiary", default=".build/release/topiary")
    ap.add_argument("--seq", type=int, default=32)
    a = ap.parse_args()
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for d in a.dirs:
            info = json.loads(subprocess.run([a.topiary, "model", "info", d, "--json"], check=True, capture_output=True).stdout)
            vocab = info["config"]["vocab_size"]
            ids = torch.randint(0, vocab, (2, a.seq), generator=torch.Generator().manual_seed(0))
            ids_path = os.path.join(tmp, "ids.json")
            json.dump({"input_ids": ids.tolist()}, open(ids_path, "w"))
            # A heterogeneous (nemotron-nas) checkpoint carries the modeling code Topiary wrote
            # beside it (config.json's auto_map): loaded with trust_remote_code, as its users load it.
            remote = {"trust_remote_code": True} if json.load(open(os.path.join(d, "config.json"))).get("auto_map") else {}
            # Eager experts: on the CPU torch's grouped product needs 16-byte-aligned strides.
            cfg = AutoConfig.from_pretrained(d, **remote)
            experts = getattr(cfg, "num_local_experts", 0) or getattr(cfg, "num_experts", 0)
            extra = {"experts_implementation": "eager"} if experts else {}
            model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", **extra, **remote)
            dtype = model.dtype
            model = model.float().eval()
            with torch.no_grad():
                ref = model(input_ids=ids).logits
            out = os.path.join(tmp, "logits.safetensors")
            subprocess.run([a.topiary, "model", "logits", d, "--input-ids", ids_path, "--out", out], check=True, stdout=subprocess.DEVNULL)
            mine = load_file(out)["logits"]
            err = ((mine - ref).norm() / ref.norm()).item()
            largest = (mine - ref).abs().max().item()
            counts_match = model.num_parameters() == info["parameters"]
            worst = max(worst, err if counts_match else float("inf"))
            print(f"{d}: {type(model).__name__} ({str(dtype).replace('torch.', '')}), {model.num_parameters()} parameters"
                  f" ({'=' if counts_match else '≠'} topiary's {info['parameters']}, active {info.get('active_parameters')}),"
                  f" logits rel. error {err:.2e} (largest difference {largest:.1e} on logits up to {ref.abs().max().item():.1f})")
    print("OK" if worst < 1e-4 else "FAIL", f"worst {worst:.2e}")
    raise SystemExit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
