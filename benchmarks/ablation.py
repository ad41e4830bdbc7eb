"""Single-head ablation: Atlas's all-heads scan against an nnsight loop; the gradient proxy against the exact ΔPPL.

Same model, passages and tokens (``atlas.models.token_budget``: domains in turn, BOS
policy ``prepend``, the last passage cut to fit) and scoring, in one process:

* ``atlas scan``: ``atlas.instruments.ablation.ablate_heads``, the instrument's ΔPPL computation:
  one baseline forward per batch records every decoder layer's input, and each ablation of
  a head of layer l runs layers l..L-1 only, ``--heads-per-pass`` ablations side by side as
  replicas of the batch; batches of ``--batch-size`` passages of similar length with at most
  10% padding (``atlas.models.batches(max_padding=0.1)``);
* ``nnsight loop``: nnsight 0.8, one ``NNsight(model).trace(input_ids=..., attention_mask=...)``
  per ablation and batch, zeroing head h's slice of layer l's attention output projection
  input (``o_proj.input[..., h*hd:(h+1)*hd] = 0``, the site Atlas gates), the logits saved
  and scored as ``atlas.models.token_nll`` does (float64 sums). It reads the scan's batches,
  so that both compute the same numbers in the same order; the ``plain loop`` case gives it
  the batching a loop would usually have, ``batches(encoded, 8)`` (all passages padded to the
  batch's longest), where the ΔPPL agree only to float32 rounding;
* ``atlas gradient importance``: ``head_importance``, Michel et al.'s |dL/d gate| (one backward
  per batch), timed for reference; ``error`` there is 1 - Spearman's rho with the exact ΔPPL.

Cases (column ``case``): ``--max-tokens`` (256) over every layer; the same tokens on the
layers ``--long-layers`` with the plain loop; ``--long-tokens`` (2048) on ``--long-layers``
(the same subset for both methods, to fit the time). ``forwards``: full-model forward
equivalents, the positions (padding included) the decoder layers processed over those of one
unpadded forward of the data. ``error``: the largest relative difference in ΔPPL between the
scan and the loop over the heads (goal <= 1e-6); ``speed``: loop time / scan time (goal >= 3).

After the table: the ratios, then Spearman's rho of |dL/d gate| with ΔPPL per layer and over
all heads (256-token case), which says how far the gradient proxy can stand in for ablation.

    python benchmarks/ablation.py
    python benchmarks/ablation.py --long-layers 0,10,20,29 --json ablation.json
"""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager

import numpy as np
import torch
from _common import Report, arguments, measure, warm_up
from nnsight import NNsight

from atlas import load_corpus, load_model
from atlas.instruments.ablation import MAX_PADDING, ablate_heads, head_importance
from atlas.models import batches, decoder_layers, head_dim, hooks, output_projection, token_budget
from atlas.stats import spearman


@contextmanager
def counting_positions(model):
    """Positions (rows x sequence length, padding included) the decoder layers process: [total]."""
    total = [0]

    def count(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [R, T, D]
        total[0] += hidden.shape[0] * hidden.shape[1]

    with hooks(*[(layer, "forward_pre_kwargs", count) for layer in decoder_layers(model)]):
        yield total


def nnsight_loop(lm, encoded, layers, data) -> tuple[float, np.ndarray]:
    """Baseline summed NLL and summed NLL per (layer in ``layers``, head): one nnsight trace per ablation and
    batch of ``data`` ((indices, ids, mask) as ``atlas.models.batches`` yields them)."""
    traced, hd = NNsight(lm.model), head_dim(lm.model)
    site = [output_projection(traced, layer) for layer in layers]  # the envoys of the o_proj modules

    def summed_nll(ids, mask, layer_site=None, head=None) -> float:
        with traced.trace(input_ids=ids, attention_mask=mask):
            if layer_site is not None:
                layer_site.input[..., head * hd:(head + 1) * hd] = 0
            logits = traced.output.logits.save()  # [B, T, V]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]  # as atlas.models.token_nll
        return float(nll.double().sum())

    with torch.no_grad():
        base = sum(summed_nll(ids, mask) for _, ids, mask in data)
        nll = np.array([[sum(summed_nll(ids, mask, s, head) for _, ids, mask in data) for head in range(lm.n_heads)]
                        for s in site])
    return base, nll


def summed(base: np.ndarray, nll: np.ndarray) -> tuple[float, np.ndarray]:
    """The scan's per-passage NLLs ([P], [P, L, H]) summed over passages, as the loop computes them."""
    return float(base.sum()), nll.sum(0)


def delta_ppl(base: float, nll: np.ndarray, n_tokens: int) -> np.ndarray:
    return np.exp(nll / n_tokens) - math.exp(base / n_tokens)


def run_case(report, lm, encoded, case, layers, args, plain_loop: bool = False) -> np.ndarray:
    """The scan and the loop on ``layers``; the loop on the scan's batches, or on plain ones (``plain_loop``)."""
    n_tokens = sum(len(ids) - 1 for ids in encoded)
    real = sum(len(ids) for ids in encoded) * len(decoder_layers(lm.model))  # positions of one forward, unpadded

    def timed(fn):
        with counting_positions(lm.model) as positions:
            m = measure(fn)
        return m, positions[0] / real

    same = list(batches(encoded, args.batch_size, lm.doc_start_id, lm.device, MAX_PADDING))  # the scan's
    plain = list(batches(encoded, args.batch_size, lm.doc_start_id, lm.device))
    scan, scan_forwards = timed(lambda: summed(*ablate_heads(lm, encoded, layers, args.batch_size,
                                                             args.heads_per_pass, False)))
    loop, loop_forwards = timed(lambda: nnsight_loop(lm, encoded, layers, plain if plain_loop else same))
    d_scan, d_loop = delta_ppl(*scan.value, n_tokens), delta_ppl(*loop.value, n_tokens)
    error = float(np.max(np.abs(d_scan - d_loop) / np.abs(d_loop)))
    common = dict(case=case, tokens=n_tokens, ablations=len(layers) * lm.n_heads)
    report.add(**common, method="atlas scan", setting=f"heads_per_pass={args.heads_per_pass}, {len(same)} batches",
               seconds=scan.seconds, forwards=scan_forwards, peak_mb=scan.peak_mb, error=error,
               speed=loop.seconds / scan.seconds)
    batching = f"plain batches of {args.batch_size} ({len(plain)})" if plain_loop else f"the scan's {len(same)} batches"
    report.add(**common, method="nnsight loop", setting=f"a trace per ablation and batch; {batching}",
               seconds=loop.seconds, forwards=loop_forwards, peak_mb=loop.peak_mb, error=error, speed=1.0)
    print(f"{case}: baseline ppl scan {math.exp(scan.value[0] / n_tokens):.6f}, loop "
          f"{math.exp(loop.value[0] / n_tokens):.6f}; ΔPPL from {d_loop.min():.4g} to {d_loop.max():.4g}, "
          f"max |difference| {np.abs(d_scan - d_loop).max():.2e}", flush=True)
    return d_scan


def main() -> None:
    parser = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens of the all-layers case")
    parser.add_argument("--long-tokens", type=int, default=2048, help="tokens of the layer-subset case (0: skip)")
    parser.add_argument("--long-layers", default="0,15,29", help="layers of the long and the plain-loop cases")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--heads-per-pass", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model, device="cpu", dtype="float32")
    corpus = load_corpus(args.corpus)
    report = Report("ablation", vars(args) | {"corpus": corpus.name, "model": lm.name})
    print(f"{lm.name}: {lm.n_layers} layers x {lm.n_heads} heads (head_dim {head_dim(lm.model)}), {corpus.name}")

    warm_up(lm.model)
    everything = list(range(lm.n_layers))
    subset = [int(x) for x in args.long_layers.split(",")]
    encoded = token_budget(lm, corpus, args.max_tokens)
    exact = run_case(report, lm, encoded, f"{args.max_tokens} tokens, all layers", everything, args)
    importance = measure(lambda: head_importance(lm, encoded, args.batch_size))  # [L, H]
    overall = spearman(importance.value.ravel(), exact.ravel())
    per_layer = [spearman(importance.value[layer], exact.reshape(lm.n_layers, -1)[layer]) for layer in everything]
    report.add(case=f"{args.max_tokens} tokens, all layers", tokens=report.rows[0]["tokens"],
               ablations=exact.size, method="atlas gradient importance", setting="|dL/d gate|, one backward per batch",
               seconds=importance.seconds, forwards=None, peak_mb=importance.peak_mb, error=1 - overall, speed=None)
    run_case(report, lm, encoded, f"{args.max_tokens} tokens, layers {args.long_layers}, plain loop", subset, args,
             plain_loop=True)
    if args.long_tokens:
        run_case(report, lm, token_budget(lm, corpus, args.long_tokens),
                 f"{args.long_tokens} tokens, layers {args.long_layers}", subset, args)
    ratios = report.ratios(["case"], {"seconds": "min", "forwards": "min", "peak_mb": "min"})
    spearman_note = (f"Spearman rho(|dL/d gate|, ΔPPL), {args.max_tokens} tokens: overall {overall:.3f} over "
                     f"{exact.size} heads; per layer ({lm.n_heads} heads each) median {np.median(per_layer):.2f}, range "
                     f"{min(per_layer):.2f} .. {max(per_layer):.2f}:\n  "
                     + " ".join(f"{layer}:{rho:+.2f}" for layer, rho in enumerate(per_layer)))
    report.show(ratios, notes=[spearman_note])
    report.write(args.json, ratios, spearman={"overall": overall, "per_layer": per_layer})


if __name__ == "__main__":
    main()
