"""P1 — ablation resistance: strongly coupled layers lose less when one head is removed.

Seed: measurements-gpt2-april-2026, Untested Predictions: "Layers 9-10 should show
highest resistance to head ablation" (the coupling peak). Test: "Michel et al.
(2019) head ablation infrastructure. Zero out attention heads one at a time,
measure perplexity change. Compare impact of ablating layers 9-10 vs layers 0-2."

(a) named, gpt2: mean delta-PPL of single-head ablations in layers 9-10 minus that
    in layers 0-2 < 0 (heads resampled within each group);
(b) general, selected model: layers with higher inter-head coupling resist
    ablation more — Spearman rho(layer coupling, layer mean delta-PPL) < 0,
    (layer pairs resampled). Both instruments run on the same model and corpus.
"""

import pytest

from atlas import Criterion, spearman

SOURCE = "measurements-gpt2-april-2026: Untested Predictions, 'Layers 9-10 ... highest resistance'"

DEEP_RESIST = Criterion(
    statistic="mean delta-PPL of single-head ablations, layers 9-10 minus layers 0-2", direction="<",
    threshold=0.0, ci="95% percentile bootstrap over heads, each group resampled on its own",
    sample="every head of layers 0-2 and 9-10 (GPT-2 small: 36 and 24 heads)")
COUPLED_RESIST = Criterion(
    statistic="Spearman rho(layer coupling (variant all), layer mean delta-PPL)", direction="<", threshold=0.0,
    ci="95% percentile bootstrap over layers", sample="every layer of the model")


@pytest.mark.prediction(id="P1a-deep-layers-resist-gpt2", form="named", model="gpt2", source=SOURCE,
                        needs=("ablation",),
                        claim="In GPT-2 small, removing one head of layer 9 or 10 costs less perplexity than "
                              "removing one of layers 0-2.",
                        criterion=DEEP_RESIST)
def test_layers_9_10_resist_ablation_more_than_0_2_in_gpt2(prediction):
    heads = prediction.evidence["ablation"]["ablation"]
    deep = heads.loc[heads["layer"].isin([9, 10]), "delta_ppl"].to_numpy(float)
    early = heads.loc[heads["layer"].isin([0, 1, 2]), "delta_ppl"].to_numpy(float)
    ci = prediction.bootstrap((deep, early), lambda a, b: a.mean() - b.mean(), paired=False)
    prediction.conclude(effect=float(deep.mean() - early.mean()), ci=ci, n=len(deep) + len(early), evidence={
        "mean_delta_ppl_9_10": float(deep.mean()), "mean_delta_ppl_0_2": float(early.mean()),
        "baseline_ppl": float(heads["baseline_ppl"].iloc[0])})


@pytest.mark.prediction(id="P1b-coupled-layers-resist", form="general", source=SOURCE,
                        needs=("coupling", "ablation"),
                        claim="Layers with higher inter-head coupling resist single-head ablation more.",
                        criterion=COUPLED_RESIST)
def test_coupled_layers_resist_ablation(prediction):
    coupling = prediction.evidence["coupling"]["coupling"]
    coupling = coupling[coupling["variant"] == "all"].set_index("layer")["coupling"]
    resistance = prediction.evidence["ablation"]["ablation_layers"].set_index("layer")["mean_delta_ppl"]
    layers = sorted(int(k) for k in set(coupling.index) & set(resistance.index))
    x, y = coupling.loc[layers].to_numpy(float), resistance.loc[layers].to_numpy(float)
    ci = prediction.bootstrap((x, y), spearman, paired=True)
    prediction.conclude(effect=spearman(x, y), ci=ci, n=len(layers), evidence={
        "coupling": dict(zip(layers, x.round(4).tolist())), "mean_delta_ppl": dict(zip(layers, y.round(4).tolist()))})
