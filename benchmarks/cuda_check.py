"""The CUDA paths, checked in one script on a machine with a GPU (issue 24: models larger than one device).

Three checks, each recorded in the JSON (``--json PATH``) with its numbers, its wall time and its error if it
failed (the others still run):

* ``dtypes``: perplexity and coupling on ``--model`` (default the offline SmolLM2) on ``cuda`` in float32 and
  in bfloat16 (the default dtype on CUDA), through CISP: the largest relative difference of a passage's NLL
  and of a domain's perplexity, and the largest absolute difference of a layer's coupling, bfloat16 against
  float32;
* ``profiles``: the wall time of ``--instruments`` as a prediction runs them (``AtlasSession.measure``: the
  profile's corpus and settings, a fresh store, nothing reused) in the ``quick`` and ``full`` profiles, in the
  default dtype, and the total of each profile;
* ``device_map``: a randomly initialised model of Llama-2-7B's shape (32 layers, hidden 4096, MLP 11008,
  32 heads, vocabulary 32000; ``--layers`` fewer when the disk or the time is short), written once as a
  bfloat16 checkpoint folder, then loaded as ``--atlas-device-map auto`` loads a checkpoint
  (``load_model(folder, device_map="auto")``: ``from_pretrained(device_map="auto")``, never whole on one
  device) with each GPU capped at ``--gpu-cap-gib`` (so that one GPU too is split, the rest offloaded to the
  CPU): its placement, the perplexity it measures split, the same on the model loaded whole on ``cuda:0``
  where it fits (the largest relative difference of a passage's NLL), and the refusal of ``hessian`` on the
  split model.

Without a CUDA device it says so and ends with status 0: there is nothing to check. ``--dry-run-on-cpu`` runs
every check at toy sizes on the CPU (the tiny Llama for the dtypes and profiles, a 4-layer Llama split between
the CPU and the disk for the device map): a test of the script itself, not of CUDA.

    python benchmarks/cuda_check.py --json cuda-check.json
    python benchmarks/cuda_check.py --layers 8 --instruments perplexity,coupling --json cuda-check.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atlas import (PROFILES, AtlasSession, SplitRefused, Store, load_corpus, load_model, package_versions,
                   run_instrument)

LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
       "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results here")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the model of the dtypes and profiles checks")
    parser.add_argument("--corpus", default="starter", help="JSONL corpus (default: the bundled starter corpus)")
    parser.add_argument("--per-domain", type=int, default=4, help="passages per domain of the dtypes and device_map "
                                                                   "checks")
    parser.add_argument("--instruments", default="perplexity,coupling,ablation,hessian",
                        help="the instruments the profiles check times, comma-separated")
    parser.add_argument("--profiles", default="quick,full", help="the profiles it times, comma-separated")
    parser.add_argument("--layers", type=int, default=LLAMA_7B["num_hidden_layers"],
                        help="decoder layers of the 7B-shaped model (32: Llama-2-7B's)")
    parser.add_argument("--gpu-cap-gib", type=float, default=8.0,
                        help="memory each GPU may give the 7B-shaped model's weights, GiB (0: no cap)")
    parser.add_argument("--checks", default="dtypes,profiles,device_map", help="which checks, comma-separated")
    parser.add_argument("--dry-run-on-cpu", action="store_true",
                        help="every check at toy sizes on the CPU: a test of this script, not of CUDA")
    args = parser.parse_args()

    if not torch.cuda.is_available() and not args.dry_run_on_cpu:
        print("no CUDA device: nothing to check (torch sees no GPU; run this on a machine with one)")
        if args.json is not None:
            args.json.write_text(json.dumps({"cuda": False, "note": "no CUDA device: nothing to check"}, indent=1))
        return 0
    cuda = not args.dry_run_on_cpu
    results = {"cuda": cuda, "machine": _machine(cuda), "settings": vars(args) | {"json": str(args.json)},
               "checks": {}}
    corpus = load_corpus(args.corpus)
    checks = {"dtypes": lambda: check_dtypes(args.model if cuda else "tiny-llama", corpus.sample(args.per_domain),
                                             "cuda" if cuda else "cpu"),
              "profiles": lambda: check_profiles(args.model if cuda else "tiny-llama", args.corpus,
                                                 args.instruments.split(","), args.profiles.split(","),
                                                 "cuda" if cuda else "cpu"),
              "device_map": lambda: check_device_map(corpus.sample(args.per_domain), args.layers, args.gpu_cap_gib,
                                                     cuda)}
    for name in args.checks.split(","):
        started = time.perf_counter()
        try:
            outcome = {"ok": True, **checks[name]()}
        except Exception as exc:  # recorded; the other checks still run
            outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        outcome["seconds"] = time.perf_counter() - started
        results["checks"][name] = outcome
        print(f"== {name}: {'ok' if outcome['ok'] else 'FAILED'} in {outcome['seconds']:.1f} s")
        print(json.dumps({k: v for k, v in outcome.items() if k != "traceback"}, indent=1, default=str))
        if cuda:
            torch.cuda.empty_cache()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0 if all(c["ok"] for c in results["checks"].values()) else 1


def _machine(cuda: bool) -> dict:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"node": platform.node(), "gpus": gpus, "torch_cuda": torch.version.cuda,
            "versions": package_versions(("torch", "transformers", "accelerate", "atlas-landscape"),
                                         missing="not installed")}


def _synchronised(fn):
    """``fn()`` and its wall time, the GPU's queue drained before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def _passage_nll(tables: dict) -> pd.Series:
    """Mean NLL per token of each passage, from a perplexity run's primary table."""
    table = tables["perplexity"].set_index("passage_id")
    return np.log(table["ppl"].astype(float))


def _relative(a: pd.Series, b: pd.Series) -> float:
    a, b = a.align(b, join="inner")
    return float(((a - b).abs() / b.abs().clip(lower=1e-12)).max())


def check_dtypes(model: str, corpus, device: str) -> dict:
    """Perplexity and coupling in float32 and bfloat16: how far bfloat16 is from float32."""
    measured, seconds, placement = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(model, device=device, dtype=dtype)
        placement[dtype] = lm.where
        for instrument in ("perplexity", "coupling"):
            result, seconds[f"{instrument} {dtype}"] = _synchronised(lambda: run_instrument(
                Store("sqlite://"), lm, corpus, instrument, progress=False, bootstrap_resamples=200))
            measured[instrument, dtype] = result.tables
        lm = None  # freed before the next dtype loads
    nll = {d: _passage_nll(measured["perplexity", d]) for d in ("float32", "bfloat16")}
    domains = {d: measured["perplexity", d]["perplexity_domains"].set_index("domain")["ppl"].astype(float)
               for d in ("float32", "bfloat16")}
    coupling = {d: measured["coupling", d]["coupling"].set_index(["layer", "variant"])["coupling"].astype(float)
                for d in ("float32", "bfloat16")}
    difference = (coupling["bfloat16"] - coupling["float32"]).abs()
    return {"model": model, "device": placement, "passages": len(nll["float32"]), "seconds": seconds,
            "nll_max_relative_difference": _relative(nll["bfloat16"], nll["float32"]),
            "domain_ppl_max_relative_difference": _relative(domains["bfloat16"], domains["float32"]),
            "coupling_max_abs_difference": float(difference.max()),
            "coupling_mean_abs_difference": float(difference.mean()),
            "mean_nll": {d: float(nll[d].mean()) for d in nll}}


def check_profiles(model: str, corpus: str, instruments: list[str], profiles: list[str], device: str) -> dict:
    """Each instrument as a prediction runs it, in each profile, on a fresh store: wall time per run and in all."""
    out = {}
    for profile in profiles:
        with tempfile.TemporaryDirectory() as folder:
            session = AtlasSession(model, corpus, f"sqlite:///{folder}/atlas.db", Path(folder), device=device,
                                   profile=PROFILES[profile])
            lm, load_s = _synchronised(lambda: session.model(model))
            runs = {}
            for instrument in instruments:
                result, runs[instrument] = _synchronised(lambda: session.measure(instrument, lm, {}))
                assert not result.reused and result.run.status == "complete", result.run
            out[profile] = {"load_s": load_s, "runs_s": runs, "total_s": sum(runs.values()), "device": lm.where,
                            "dtype": lm.dtype, "passages": {i: len(session.corpus_for(i).passages)
                                                            for i in instruments}}
            lm = session = None
    return out


def check_device_map(corpus, layers: int, cap_gib: float, cuda: bool) -> dict:
    """A 7B-shaped random checkpoint loaded with device_map auto: placement, perplexity split and whole, refusal."""
    from accelerate.utils import get_max_memory
    from transformers import AutoModelForCausalLM, LlamaConfig

    from atlas.models import byte_tokenizer

    shape = {**(LLAMA_7B if cuda else TOY), "num_hidden_layers": layers if cuda else TOY["num_hidden_layers"]}
    folder = Path(tempfile.mkdtemp(prefix="atlas-7b-shaped-"))
    try:
        tok = byte_tokenizer()
        config = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, tie_word_embeddings=False)

        def build():
            torch.manual_seed(0)
            with torch.device("cuda" if cuda else "cpu"):  # initialised on the GPU: seconds, not minutes
                model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
            return sum(p.numel() for p in model.parameters())

        parameters, build_s = _synchronised(build)
        if cuda:
            torch.cuda.empty_cache()
        device = "cuda" if cuda else "cpu"
        if not cuda:  # the toy model's embedding and first block on the CPU, the rest on the disk
            cap = {"cpu": 300_000}
        elif cap_gib > 0:
            cap = {i: f"{cap_gib}GiB" for i in range(torch.cuda.device_count())} | {"cpu": get_max_memory()["cpu"]}
        else:
            cap = None
        split, load_s = _synchronised(lambda: load_model(str(folder), device=device, dtype="bfloat16",
                                                         device_map="auto", _max_memory=cap))
        on_split, split_s = _synchronised(lambda: run_instrument(Store("sqlite://"), split, corpus, "perplexity",
                                                                 progress=False, bootstrap_resamples=200))
        try:
            run_instrument(Store("sqlite://"), split, corpus, "hessian", progress=False)
            refusal = "NOT REFUSED"
        except SplitRefused as exc:
            refusal = str(exc)
        out = {"parameters": parameters, "layers": shape["num_hidden_layers"], "build_and_save_s": build_s,
               "load_s": load_s, "split": split.split, "placement": split.where, "input_device": split.device,
               "modules_per_device": pd.Series(split.placement).value_counts().to_dict() if split.placement else {},
               "perplexity_split_s": split_s, "run_device": on_split.run.device,
               "mean_nll_split": float(_passage_nll(on_split.tables).mean()), "hessian_refusal": refusal}
        split = None
        if cuda:
            torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info(0)[0] if cuda else math.inf
        if parameters * 2 * 1.2 < free:  # bfloat16 weights and some room: the whole model fits on cuda:0
            whole, whole_load_s = _synchronised(lambda: load_model(str(folder), device="cuda:0" if cuda else "cpu",
                                                                   dtype="bfloat16"))
            on_whole, whole_s = _synchronised(lambda: run_instrument(Store("sqlite://"), whole, corpus, "perplexity",
                                                                     progress=False, bootstrap_resamples=200))
            out |= {"whole_load_s": whole_load_s, "perplexity_whole_s": whole_s,
                    "nll_split_vs_whole_max_relative_difference": _relative(_passage_nll(on_split.tables),
                                                                            _passage_nll(on_whole.tables))}
            whole = None
        else:
            out["whole"] = f"not compared: {parameters * 2 / 2**30:.1f} GiB of weights do not fit cuda:0"
        if refusal == "NOT REFUSED" or not out["split"]:
            raise AssertionError(f"the 7B-shaped model was not split, or hessian was not refused on it: {out}")
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
