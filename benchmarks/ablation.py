"""Single-head ablation scan: a naive hook loop against Atlas's fast scan, side by side.

Naive (as with TransformerLens hooks): for every ablated head, one full forward over
all the data with a pre-hook zeroing that head's slice of the output-projection input.
Fast (``atlas.instruments.ablation``): one recorded baseline forward per batch, then
only layers l..L-1 per ablation, ``heads_per_pass`` ablations per pass.
Both score the same passages and tokens; printed: wall times, speed ratio (goal >= 2x)
and the largest relative difference in delta_ppl (goal <= 1e-4).

    python benchmarks/ablation.py --max-tokens 256 --layers 0,10,20,29
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from atlas import load_corpus, load_model
from atlas._anatomy import head_dim, output_projection
from atlas._scoring import batches, token_nll
from atlas._scoring import token_budget
from atlas.instruments.ablation import _scan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "domains-v1.jsonl"


def naive_nll(lm, encoded, batch_size: int, layer: int | None = None, head: int | None = None) -> float:
    """Summed NLL of all scored tokens, one full forward per batch, head ``head`` of ``layer`` zeroed."""
    hd = head_dim(lm.model)

    def zero_head(module, args):
        x = args[0].clone()
        x[..., head * hd:(head + 1) * hd] = 0
        return (x,)

    handle = None if layer is None else output_projection(lm.model, layer).register_forward_pre_hook(zero_head)
    try:
        with torch.no_grad():
            return sum(float(token_nll(lm.model, ids, mask).double().sum())
                       for _, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device))
    finally:
        if handle is not None:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--corpus", default=str(SHARED) if SHARED.is_file() else "starter")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--heads-per-pass", type=int, default=4)
    parser.add_argument("--layers", default="", help="comma-separated subset of layers (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 gives steadier times on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, device=args.device)
    encoded = token_budget(lm, load_corpus(args.corpus), args.max_tokens)
    n_tokens = sum(len(ids) - 1 for ids in encoded)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(lm.n_layers))
    print(f"{lm.name}: {lm.n_layers} layers x {lm.n_heads} heads; {len(encoded)} passages, {n_tokens} tokens; "
          f"layers {layers}; {torch.get_num_threads()} threads")

    start, cpu = time.perf_counter(), time.process_time()
    base = naive_nll(lm, encoded, args.batch_size)
    naive = np.array([[naive_nll(lm, encoded, args.batch_size, layer, head) for head in range(lm.n_heads)]
                      for layer in layers])
    t_naive, c_naive = time.perf_counter() - start, time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    fast_base, fast = _scan(lm, encoded, layers, args.batch_size, args.heads_per_pass, progress=False)
    t_fast, c_fast = time.perf_counter() - start, time.process_time() - cpu

    def delta(nll, b):
        return np.exp(nll / n_tokens) - math.exp(b / n_tokens)

    d_naive, d_fast = delta(naive, base), delta(fast, fast_base)
    rel = np.abs(d_fast - d_naive) / np.maximum(np.abs(d_naive), 1e-12)
    n = len(layers) * lm.n_heads
    print(f"naive loop : {t_naive:8.2f} s wall, {c_naive:8.2f} s CPU  ({n} ablations + baseline)")
    print(f"fast scan  : {t_fast:8.2f} s wall, {c_fast:8.2f} s CPU  (heads_per_pass={args.heads_per_pass})")
    print(f"speed ratio: {t_naive / t_fast:8.2f} x wall, {c_naive / c_fast:.2f} x CPU   (goal >= 2)")
    print(f"baseline ppl naive {math.exp(base / n_tokens):.6f}  fast {math.exp(fast_base / n_tokens):.6f}")
    print(f"max |delta_ppl| rel. difference: {rel.max():.2e}   (goal <= 1e-4); max |delta_ppl| abs. difference "
          f"{np.abs(d_fast - d_naive).max():.2e}")


if __name__ == "__main__":
    main()
