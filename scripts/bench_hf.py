#!/usr/bin/env python3
"""The transformers side of `topiary bench train`: same config, batch, sequence, random tokens,
float32, AdamW, sdpa attention, a fixed thread count. Prints tokens/s.

    .venv/bin/python scripts/bench_hf.py experiments/bench/llama-128.json --batch 16 --seq 128 --steps 10 --threads 2
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.config) as f:
        cfg = json.load(f)
    config = AutoConfig.for_model(**cfg)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    ids = torch.randint(0, config.vocab_size, (a.batch, a.seq))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    step()
    t = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    dt = time.perf_counter() - t
    print(json.dumps({"tokens_per_second": a.batch * a.seq * a.steps / dt, "seconds_per_step": dt / a.steps,
                      "threads": a.threads, "torch": torch.__version__, "final_loss": loss}))


if __name__ == "__main__":
    main()
