"""P1 — ablation resistance: strongly coupled layers lose less when one head is removed.

Seed: measurements-gpt2-april-2026, Untested Predictions: "Layers 9-10 should show
highest resistance to head ablation" (the coupling peak). Test: "Michel et al.
(2019) head ablation infrastructure. Zero out attention heads one at a time,
measure perplexity change. Compare impact of ablating layers 9-10 vs layers 0-2."

(a) named, gpt2: mean delta-PPL of single-head ablations in layers 9-10 minus that
    in layers 0-2 < 0: a claim about GPT-2's named layers, its interval over passages;
(b) general, selected model: layers with higher inter-head coupling resist
    ablation more — Spearman rho(layer coupling, layer mean delta-PPL) < 0, with the
    coupling probe's default variant (row-centred: not an artifact of the causal mask).
    A claim about layers, of which one model's smooth profile is one draw: its interval is
    over layers, at their effective number (Bretherton et al. 1999; ``atlas.evidence``).
"""

import pytest

from atlas import Criterion
from atlas.evidence import ablation_profile, layer_contrast, layer_correlation, mean_profile
from atlas.simulate.layers import LayerWorld, nulls, within_model_nulls

SOURCE = "measurements-gpt2-april-2026: Untested Predictions, 'Layers 9-10 ... highest resistance'"
VARIANT = "row_centred"

DEEP_RESIST = Criterion(
    statistic="mean delta-PPL of single-head ablations, layers 9-10 minus layers 0-2", direction="<",
    threshold=0.0, ci="95% BCa bootstrap over passages, every head's delta-PPL recomputed per resample",
    sample="every head of layers 0-2 and 9-10 (GPT-2 small: 36 and 24 heads)", unit="passages",
    scope="this model", sesoi=0.1, scale="difference")
COUPLED_RESIST = Criterion(
    statistic=f"Spearman rho(layer coupling (variant {VARIANT}), layer mean delta-PPL)", direction="<",
    threshold=0.0, ci="95% Fisher-z interval at the effective number of independent layers (Bretherton 1999)",
    sample="every layer of the model", unit="layers", scope="across models", sesoi=0.5,
    scale="correlation")
BOTH = ("coupling", "ablation")


@pytest.mark.prediction(id="P1a-deep-layers-resist-gpt2", form="named", model="gpt2", source=SOURCE,
                        needs=("ablation",),
                        claim="In GPT-2 small, removing one head of layer 9 or 10 costs less perplexity than "
                              "removing one of layers 0-2.",
                        criterion=DEEP_RESIST, nulls=within_model_nulls(("ablation",), layers=12),
                        alternative=LayerWorld("delta-PPL falls 0.1 from layers 0-2 to 9-10", ("ablation",),
                                               shared="none", rise=1.0, link=-0.41, layers=12))
def test_layers_9_10_resist_ablation_more_than_0_2_in_gpt2(prediction):
    resistance = ablation_profile(prediction.evidence["ablation"]["ablation_passages"])
    weights = {9: 0.5, 10: 0.5, 0: -1 / 3, 1: -1 / 3, 2: -1 / 3}  # every layer has 12 heads
    effect, ci = layer_contrast(resistance, weights)
    profile = dict(zip(resistance.layers.tolist(), resistance.profile.round(4).tolist()))
    prediction.conclude(effect=effect, ci=ci, n=resistance.n, evidence={"mean_delta_ppl_by_layer": profile})


@pytest.mark.prediction(id="P1b-coupled-layers-resist", form="general", source=SOURCE, needs=BOTH,
                        claim="Layers with higher inter-head coupling resist single-head ablation more.",
                        criterion=COUPLED_RESIST, nulls=nulls(BOTH),
                        alternative=LayerWorld("layer profiles correlated -0.5", BOTH, link=-0.5))
def test_coupled_layers_resist_ablation(prediction):
    passages = prediction.evidence["coupling"]["coupling_passages"]
    coupling = mean_profile(passages[passages["variant"] == VARIANT], "coupling")
    resistance = ablation_profile(prediction.evidence["ablation"]["ablation_passages"])
    result = layer_correlation(coupling, resistance)
    prediction.conclude(effect=result.rho, ci=result.ci, n=result.n_layers, evidence={
        **result.evidence(), "coupling": dict(zip(coupling.layers.tolist(), coupling.profile.round(4).tolist())),
        "mean_delta_ppl": dict(zip(resistance.layers.tolist(), resistance.profile.round(4).tolist()))})
