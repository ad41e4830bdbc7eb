"""Top-5 Hessian eigenvalues: Atlas's Lanczos vs PyHessian's power iteration with deflation.

Same model, same batch, same parameter block, measured side by side in one run:

* Atlas: ``measure_hessian`` (backend atlas) with trace and density off, i.e. Lanczos with
  full reorthogonalisation run until the top_k Ritz values at BOTH ends have converged;
* PyHessian 0.1: ``hessian(...).eigenvalues(top_n=5, maxIter, tol)``, which finds the
  eigenvalues of largest *magnitude* one at a time.

Printed: wall time each (setup included: one forward and a gradient with a graph),
Hessian-vector products each, the speed ratio (goal: Atlas >= 5x faster) and the max
relative error between the two lists, both sorted by magnitude (goal <= 1%). Ritz values
and Rayleigh quotients both lie inside the true extremes, so of two estimates of an
extreme eigenvalue the one further out is the more accurate. PyHessian's ``tol`` is a
relative change between iterations, looser than Atlas's residual test at the same value.
``--cost`` also times, at 64 and 256 tokens, one product and one top eigenvalue pair
(top_k=1) for the first and last layer's attention, and extrapolates blocks=attention
over all layers (a product costs about linearly in the depth it back-propagates through).

    python benchmarks/hessian.py                                   # tiny-gpt2, whole model
    python benchmarks/hessian.py --model smollm2-135m-instruct --block layer.0.attention --cost
"""

from __future__ import annotations

import argparse
import importlib
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from atlas import load_corpus, load_model
from atlas._anatomy import eager_attention
from atlas.instruments.hessian import (BlockHessian, _masked_mean_nll, _mean_nll, _only_block_requires_grad,
                                       _PyHessianLM, hessian_batch, hessian_blocks, measure_hessian)

SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "domains-v1.jsonl"


def block_settings(block: str) -> dict:
    """``model`` | ``layer.{i}.attention`` | ``layer.{i}.mlp`` -> the instrument's blocks/layers settings."""
    if block == "model":
        return {"blocks": "model", "layers": "all"}
    _, layer, part = block.split(".")
    return {"blocks": part, "layers": layer}


def atlas_top(lm, corpus, block, args) -> tuple[list[float], int, float]:
    start = time.perf_counter()
    table = measure_hessian(lm, corpus, **block_settings(block), top_k=args.top_k, lanczos_steps=args.lanczos_steps,
                            hutchinson_samples=0, slq_runs=0, max_tokens=args.max_tokens, tol=args.tol,
                            progress=False)["hessian"]
    seconds = time.perf_counter() - start
    values = table["value"].drop_duplicates().to_numpy()  # both ends; the same value twice when they meet
    return sorted(values, key=abs, reverse=True)[: args.top_k], int(table["n_hvp"].iloc[0]), seconds


def pyhessian_top(lm, corpus, block, args) -> tuple[list[float], int, float]:
    ph = importlib.import_module("pyhessian.hessian")
    (_, params), = hessian_blocks(lm.model, **block_settings(block))
    ids, mask = hessian_batch(lm, corpus, args.max_tokens)
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    start = time.perf_counter()
    with (eager_attention(lm.model), torch.enable_grad(), _only_block_requires_grad(lm.model, params),
          mock.patch.object(ph, "hessian_vector_product", wraps=ph.hessian_vector_product) as counted,
          warnings.catch_warnings()):
        warnings.simplefilter("ignore", UserWarning)  # backward(create_graph=True) reference-cycle warning
        engine = ph.hessian(_PyHessianLM(lm.model), _masked_mean_nll, data=(torch.stack([ids, mask]), targets),
                            cuda=False)
        values, _ = engine.eigenvalues(top_n=args.top_k, maxIter=args.max_iter, tol=args.py_tol)
        del engine
    seconds = time.perf_counter() - start
    return sorted(values, key=abs, reverse=True), counted.call_count, seconds


def warm_up(lm, corpus, args) -> None:
    """One untimed gradient, so that neither method pays for first-call allocations."""
    ids, mask = hessian_batch(lm, corpus, args.max_tokens)
    with eager_attention(lm.model), torch.enable_grad():
        _mean_nll(lm.model, ids, mask).backward()
    lm.model.zero_grad(set_to_none=True)


def cost(lm, corpus) -> None:
    """Per layer (first and last): one product, and blocks=attention / top_k=1 end to end; extrapolated to all."""
    last = lm.n_layers - 1
    for tokens in (64, 256):
        ids, mask = hessian_batch(lm, corpus, tokens)
        seconds = []
        for layer in (0, last):
            (_, params), = hessian_blocks(lm.model, "attention", str(layer))
            with eager_attention(lm.model), torch.enable_grad(), _only_block_requires_grad(lm.model, params):
                start = time.perf_counter()
                H = BlockHessian(params, _mean_nll(lm.model, ids, mask))
                setup = time.perf_counter() - start
                v = torch.randn(H.n)
                start = time.perf_counter()
                for _ in range(3):
                    H(v)
                hvp = (time.perf_counter() - start) / 3
                del H
            start = time.perf_counter()
            table = measure_hessian(lm, corpus, blocks="attention", layers=str(layer), top_k=1, hutchinson_samples=0,
                                    slq_runs=0, max_tokens=tokens, progress=False)["hessian"]
            seconds.append(time.perf_counter() - start)
            print(f"{tokens:4d} tokens, layer.{layer}.attention: one HVP {hvp:.3f} s (gradient with graph "
                  f"{setup:.3f} s); top_k=1 at both ends {seconds[-1]:.1f} s, {table['n_hvp'].iloc[0]} HVPs")
        print(f"{tokens:4d} tokens: blocks=attention, top_k=1 over all {lm.n_layers} layers "
              f"~ {np.mean(seconds) * lm.n_layers / 60:.1f} min (mean of the first and last layer, times {lm.n_layers})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--block", default="model", help="model | layer.{i}.attention | layer.{i}.mlp")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--lanczos-steps", type=int, default=60, help="Atlas's cap on Lanczos steps")
    parser.add_argument("--max-iter", type=int, default=100, help="PyHessian's power iterations per eigenvalue")
    parser.add_argument("--tol", type=float, default=1e-3, help="Atlas's residual tolerance")
    parser.add_argument("--py-tol", type=float, default=1e-4,
                        help="PyHessian's relative-change tolerance; at 1e-3 its own values stay up to 5%% off")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared machine, threads waiting at barriers swing timings 10x)")
    parser.add_argument("--cost", action="store_true", help="also time one HVP and the per-layer profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm = load_model(args.model, device="cpu", dtype="float32")
    corpus = load_corpus(SHARED_CORPUS if SHARED_CORPUS.is_file() else "starter")
    print(f"{args.model}, block {args.block}, {args.max_tokens} tokens of {corpus.name}, "
          f"torch threads {torch.get_num_threads()}")
    warm_up(lm, corpus, args)
    torch.manual_seed(0)
    atlas_values, atlas_hvp, atlas_s = atlas_top(lm, corpus, args.block, args)
    py_values, py_hvp, py_s = pyhessian_top(lm, corpus, args.block, args)
    error = max(abs(a - p) / abs(a) for a, p in zip(atlas_values, py_values))
    print(f"Atlas Lanczos      {atlas_s:8.2f} s  {atlas_hvp:4d} HVPs  top-{args.top_k} by |value|: "
          + " ".join(f"{x:.5g}" for x in atlas_values))
    print(f"PyHessian power    {py_s:8.2f} s  {py_hvp:4d} HVPs  top-{args.top_k} by |value|: "
          + " ".join(f"{x:.5g}" for x in py_values))
    print(f"speed ratio {py_s / atlas_s:.1f}x (goal >= 5x), HVP ratio {py_hvp / atlas_hvp:.1f}x; "
          f"max relative error {error:.2%} (goal <= 1%)")
    if args.cost:
        cost(lm, corpus)


if __name__ == "__main__":
    main()
