"""Calibrate the plan's cost model (``atlas.Cost``): time every instrument and Lab recipe the way a run does.

For each model (``--models``, default the tiny GPT-2 and the offline model) and instrument (``--instruments``,
default every instrument that measures a single pretrained model), one run through CISP with the profile's
corpus and settings (``AtlasSession.corpus_for`` and ``settings_for``: what ``pytest predictions/`` measures),
never reused, its wall time and peak resident memory taken by ``_common.measure``. ``interpolation`` draws its
line to the model itself. Each Lab recipe (``--lab``, default the ones the predictions train) is trained once,
seed 0, in a scratch folder, as the Lab trains it (``atlas.lab.train``). The fitted coefficients (of an
instrument timed on two model sizes at least: the plan has no estimate for the others), every timing and each
recipe's training go to ``atlas/costs.json``, each entry with the load average before and after it: timings
from a busy machine say so. The file is rewritten after each timing, the entries timed now replacing their old
ones and the rest kept, so a calibration of some instruments (or an interrupted one) keeps the others.

    python benchmarks/costs.py                                            # all: about half an hour on 2 cores
    python benchmarks/costs.py --instruments perplexity,coupling --lab ""  # some instruments only
    python benchmarks/costs.py --instruments "" --lab memory-lm            # one Lab recipe only
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
from atlas.lab import load_recipe, train

#: the instruments a single pretrained model is measured with (the others train or read Lab runs)
SINGLE_MODEL = ("perplexity", "gradient", "coupling", "ablation", "hessian", "hessian_coupling", "smoothness",
                "tightness", "stiffness", "elasticity", "interpolation")
#: the Lab recipes the predictions train (``atlas plan`` lists them)
LAB_RECIPES = ("modular-addition", "memory-lm", "finetune-smollm2", "finetune-smollm2-academic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-gpt2,smollm2-135m-instruct")
    parser.add_argument("--instruments", default=",".join(SINGLE_MODEL), help="comma list; \"\" for none")
    parser.add_argument("--lab", default=",".join(LAB_RECIPES), help="Lab recipes to time; \"\" for none")
    parser.add_argument("--profile", default="quick", choices=tuple(PROFILES))
    parser.add_argument("--corpus", default="starter")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=COST_MODEL_FILE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    data.pop("machine", None)  # each entry notes its own
    data.update({"written_by": "benchmarks/costs.py", "profile": args.profile, "corpus": args.corpus})
    instruments = [name for name in args.instruments.split(",") if name]
    with tempfile.TemporaryDirectory() as folder:
        session = AtlasSession(model_name="", corpus_path=args.corpus, db_url=f"sqlite:///{folder}/costs.db",
                               reports_dir=Path(folder), device="cpu", profile=PROFILES[args.profile])
        timings: dict[str, list[dict]] = {}
        for name in args.models.split(",") if instruments else ():
            lm = load_model(name, device="cpu")
            session._models[name] = lm  # the model `interpolation` draws its line to
            warm_up(lm.model)
            parameters = sum(p.numel() for p in lm.model.parameters())
            for instrument in instruments:
                declared = {"other": name} if instrument == "interpolation" else {}
                spec, summary, corpus, others = session.resolve(instrument, lm, declared)
                load = os.getloadavg()
                m = measure(lambda: session.measure(instrument, lm, declared))
                timings.setdefault(instrument, []).append({
                    "instrument": instrument, "model": name, "parameters": parameters,
                    "passages": len(corpus.passages), "seconds": round(m.seconds, 3), "peak_mb": round(m.peak_mb, 1),
                    "machine": _machine(args, load)})
                print(f"{instrument:17} {name:24} {parameters:>11,} parameters {len(corpus.passages):>4} passages "
                      f"{m.seconds:8.2f} s {m.peak_mb:8.1f} MiB", flush=True)
                points = timings[instrument]
                data.setdefault("instruments", {})[instrument] = {"cost": _fitted(points), "timings": points}
                _write(args.out, data)
        for name in (r for r in args.lab.split(",") if r):
            recipe, load = load_recipe(name), os.getloadavg()
            m = measure(lambda: train(recipe, seed=0, out=Path(folder) / "lab", progress=False))
            data.setdefault("lab", {})[name] = {"steps": recipe.steps, "seconds": round(m.seconds, 3),
                                                "peak_mb": round(m.peak_mb, 1), "seed": 0,
                                                "recipe_hash": recipe.hash, "machine": _machine(args, load)}
            print(f"{'lab':17} {name:24} {recipe.steps:>6} steps {m.seconds:8.2f} s {m.peak_mb:8.1f} MiB", flush=True)
            _write(args.out, data)


def _machine(args, load_before) -> dict:
    """The machine a timing was taken on, with the load average before and after it."""
    return {"cpus": os.cpu_count(), "torch_threads": args.threads, "load_before": list(load_before),
            "load_after": list(os.getloadavg()), "torch": package_versions().get("torch")}


def _write(out: Path, data: dict) -> None:
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _fitted(points: list[dict]) -> dict | None:
    """The fitted coefficients, once the instrument was timed on two model sizes (None before: uncalibrated)."""
    if len({t["parameters"] for t in points}) < 2:
        return None
    return vars(fit_cost([(t["parameters"], t["passages"], t["seconds"], t["peak_mb"]) for t in points]))


if __name__ == "__main__":
    main()
