"""Passage perplexity and bits per byte: Atlas against lm-evaluation-harness ``loglikelihood_rolling``.

Same passages, same tokens, same checkpoint, in one process:

* ``atlas perplexity``: ``measure_perplexity`` (BOS policy ``prepend``: the model's document-start
  token, SmolLM2 ``<|endoftext|>``, is the context of the first text token), batches of
  ``--batch-size`` passages sorted by length, right-padded and masked;
* ``lm-eval loglikelihood_rolling``: lm-eval 0.4's ``HFLM`` loading the converted offline
  checkpoint (``<Atlas cache>/models/<name>-<hash>``, a float32 safetensors
  directory) with ``prefix_token_id`` set to Atlas's document-start token. Left alone, lm-eval
  prefixes ``tokenizer.bos_token_id`` -- for this GGUF-converted tokenizer the chat marker
  ``<|im_start|>`` -- and the two would score different contexts (``--lm-eval-prefix default``
  measures that). Its text encoding adds no special token here (checked: the token counts
  agree), and passages shorter than the context are one window: [prefix] + text[:-1] predicting
  the text. ``batch_size`` windows per forward, in request order.

Columns: wall time of the scoring (models loaded before, load time in ``load_s``), forward
passes (model calls), peak memory, and ``error``: the largest relative difference of a
passage's NLL from a float64 reference (every ``--reference-every``-th passage scored alone in
a float64 copy of the model, log-softmax in float64). After the table: the ratios, the
per-passage agreement of the two methods (goal <= 1e-5 relative), bits per byte per domain
from each (lm-eval's own ``bits_per_byte`` aggregation) and the CI Atlas adds.

    python benchmarks/perplexity.py
    python benchmarks/perplexity.py --per-domain 24 --json perplexity.json
"""

from __future__ import annotations

import argparse
import copy
import time
from functools import partial
from unittest import mock
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from _common import Report, arguments, measure, warm_up
from lm_eval.api.instance import Instance
from lm_eval.api.metrics import bits_per_byte
from lm_eval.models import huggingface as lm_eval_hf
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from atlas import load_corpus, load_model
from atlas.instruments.perplexity import domain_perplexity, measure_perplexity
from atlas.models import encode


@contextmanager
def counting_forwards(model):
    calls = [0]
    handle = model.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def reference_nll(lm, encoded: list[list[int]]) -> list[float]:
    """Summed NLL of each passage alone, in a float64 copy of the model, log-softmax in float64."""
    model = copy.deepcopy(lm.model).double()
    out = []
    with torch.no_grad():
        for ids in encoded:
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1], dim=-1)  # [T-1, V] float64
            out.append(float(-logp.gather(-1, x[0, 1:, None]).sum()))
    return out


def main() -> None:
    parser = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--per-domain", type=int, default=0, help="passages per domain (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reference-every", type=int, default=8, help="float64 reference on every k-th passage")
    parser.add_argument("--lm-eval-prefix", choices=("atlas", "default"), default="atlas",
                        help="lm-eval's prefix token: Atlas's document-start token, or lm-eval's default (BOS)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus).sample(args.per_domain or None)
    start = time.perf_counter()
    lm = load_model(args.model, device="cpu", dtype="float32")
    atlas_load = time.perf_counter() - start
    start = time.perf_counter()
    checkpoint = lm.model.name_or_path  # the directory Atlas converted the GGUF into (an ordinary checkpoint)
    peer = HFLM(pretrained=checkpoint, backend="causal", device="cpu", dtype="float32",
                batch_size=args.batch_size, prefix_token_id=lm.doc_start_id if args.lm_eval_prefix == "atlas" else None)
    peer_load = time.perf_counter() - start
    texts = [p.text for p in corpus.passages]
    print(f"{lm.name} ({checkpoint}): {len(texts)} passages of {corpus.name}; document start {lm.doc_start_token!r} "
          f"(id {lm.doc_start_id}); lm-eval prefix id {peer.prefix_token_id}")
    encoded = encode(lm, texts, "prepend")
    warm_up(lm.model)
    warm_up(peer.model)
    assert all(peer.tok_encode(t) == ids[1:] for t, ids in zip(texts, encoded)), "lm-eval encodes other tokens"

    with counting_forwards(lm.model) as atlas_calls:
        ours = measure(lambda: measure_perplexity(lm, corpus, batch_size=args.batch_size, progress=False))
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    # its rolling loop opens a progress bar per batch whatever disable_tqdm says: silenced
    with counting_forwards(peer.model) as peer_calls, mock.patch.object(lm_eval_hf, "tqdm", partial(tqdm, disable=True)):
        theirs = measure(lambda: peer.loglikelihood_rolling(requests, disable_tqdm=True))
    table = ours.value["perplexity"]
    atlas_nll, peer_nll = table["nll_sum"].to_numpy(), -np.array(theirs.value)

    every = list(range(0, len(texts), args.reference_every))
    reference = np.array(reference_nll(lm, [encoded[i] for i in every]))
    report = Report("perplexity", vars(args) | {"corpus": corpus.name, "passages": len(texts)})
    for method, m, nll, calls, load in (("atlas perplexity", ours, atlas_nll, atlas_calls, atlas_load),
                                        ("lm-eval loglikelihood_rolling", theirs, peer_nll, peer_calls, peer_load)):
        report.add(method=method, passages=len(texts), tokens=int(table["n_tokens"].sum()), seconds=m.seconds,
                   load_s=load, forwards=calls[0], peak_mb=m.peak_mb,
                   error=float(np.max(np.abs(nll[every] - reference) / reference)))
    agreement = float(np.max(np.abs(atlas_nll - peer_nll) / np.abs(peer_nll)))
    domains = domain_perplexity(table, n_resamples=2000).set_index("domain")
    frame = pd.DataFrame({"domain": table["domain"], "ll": -peer_nll, "bytes": table["n_bytes"]})
    peer_bpb = frame.groupby("domain", sort=False)[["ll", "bytes"]].apply(
        lambda g: bits_per_byte(list(zip(g["ll"], g["bytes"]))))
    bpb = pd.DataFrame({"atlas_bpb": domains["bits_per_byte"], "lm_eval_bpb": peer_bpb,
                        "ppl": domains["ppl"], "ppl_ci": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in
                                                          zip(domains["ci_low"], domains["ci_high"])]})
    bpb["difference"] = bpb["atlas_bpb"] - bpb["lm_eval_bpb"]
    ratios = report.ratios([], {"seconds": "min", "forwards": "min", "peak_mb": "min", "error": "min"})
    notes = [f"per-passage NLL, Atlas vs lm-eval: max relative difference {agreement:.2e} over {len(texts)} "
             f"passages (goal <= 1e-5); Atlas / lm-eval wall time {ours.seconds / theirs.seconds:.2f} (goal <= 1.0)",
             "bits per byte per domain (lm-eval has no CI; Atlas's perplexity CI: 95% percentile bootstrap over "
             "passages):", bpb.to_string(float_format=lambda x: f"{x:.6g}"),
             f"max |bits per byte difference| {bpb['difference'].abs().max():.2e}"]
    report.show(ratios, notes)
    report.write(args.json, ratios, agreement=agreement, bits_per_byte=bpb.reset_index().to_dict(orient="records"))


if __name__ == "__main__":
    main()
