"""Calibrate the plan's cost model (``atlas.Cost``): time every instrument the way a prediction runs it.

For each model (``--models``, default the tiny GPT-2 and the offline model) and instrument (``--instruments``,
default every instrument that measures a single pretrained model), one run through CISP with the profile's
corpus and settings (``AtlasSession.corpus_for`` and ``settings_for``: what ``pytest predictions/`` measures),
never reused, its wall time and peak resident memory taken by ``_common.measure``. ``interpolation`` draws its
line to the model itself. The fitted coefficients (of an instrument timed on two model sizes at least: the
plan has no estimate for the others) and every timing go to ``atlas/costs.json``, rewritten after each run (an
interrupted calibration keeps what it timed), with the load average before and after: timings from a busy
machine say so.

    python benchmarks/costs.py                                   # the offline model: an hour on a 2-core CPU
    python benchmarks/costs.py --instruments perplexity,coupling # some instruments only
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from _common import measure, warm_up

from atlas import COST_MODEL_FILE, PROFILES, AtlasSession, fit_cost, load_model, package_versions

#: the instruments a single pretrained model is measured with (the others train or read Lab runs)
SINGLE_MODEL = ("perplexity", "gradient", "coupling", "ablation", "hessian", "hessian_coupling", "smoothness",
                "tightness", "stiffness", "elasticity", "interpolation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-gpt2,smollm2-135m-instruct")
    parser.add_argument("--instruments", default=",".join(SINGLE_MODEL))
    parser.add_argument("--profile", default="quick", choices=tuple(PROFILES))
    parser.add_argument("--corpus", default="starter")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=COST_MODEL_FILE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        session = AtlasSession(model_name="", corpus_path=args.corpus, db_url=f"sqlite:///{folder}/costs.db",
                               reports_dir=Path(folder), device="cpu", profile=PROFILES[args.profile])
        for name in args.models.split(","):
            lm = load_model(name, device="cpu")
            session._models[name] = lm  # the model `interpolation` draws its line to
            warm_up(lm.model)
            parameters = sum(p.numel() for p in lm.model.parameters())
            for instrument in args.instruments.split(","):
                declared = {"other": name} if instrument == "interpolation" else {}
                spec, summary, corpus, others = session.resolve(instrument, lm, declared)
                m = measure(lambda: session.measure(instrument, lm, declared))
                timings.append({"instrument": instrument, "model": name, "parameters": parameters,
                                "passages": len(corpus.passages), "seconds": round(m.seconds, 3),
                                "peak_mb": round(m.peak_mb, 1)})
                print(f"{instrument:17} {name:24} {parameters:>11,} parameters {len(corpus.passages):>4} passages "
                      f"{m.seconds:8.2f} s {m.peak_mb:8.1f} MiB", flush=True)
                _write(args, timings, load_before)


def _write(args, timings: list[dict], load_before) -> None:
    instruments = {}
    for t in timings:
        instruments.setdefault(t["instrument"], []).append(t)
    args.out.write_text(json.dumps({
        "written_by": "benchmarks/costs.py", "profile": args.profile, "corpus": args.corpus,
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "load_before": load_before,
                    "load_after": os.getloadavg(), "torch": package_versions().get("torch")},
        "instruments": {name: {"cost": _fitted(points), "timings": points} for name, points in instruments.items()}},
        indent=1) + "\n", encoding="utf-8")


def _fitted(points: list[dict]) -> dict | None:
    """The fitted coefficients, once the instrument was timed on two model sizes (None before: uncalibrated)."""
    if len({t["parameters"] for t in points}) < 2:
        return None
    return vars(fit_cost([(t["parameters"], t["passages"], t["seconds"], t["peak_mb"]) for t in points]))


if __name__ == "__main__":
    main()
