"""P5 — inter-head coupling rises with depth.

Seed: measurements-gpt2-april-2026, "Inter-Head Coupling by Layer" (GPT-2 small,
single probe input): "Monotonic increase with depth. Peak at layers 9-10. Layer 4
anomalous dip unexplained", and layer 11: "Drop — output projection decouples".
Coupling is the coupling instrument's variant ``all``: mean pairwise Pearson
correlation of heads' causal (lower-triangle) attention maps, averaged over passages.

(a) named, gpt2: Spearman rho(layer, coupling) >= 0.6;
(b) named, gpt2: the layer-4 dip, coupling(4) - mean(coupling(3), coupling(5)) < 0;
(c) named, gpt2: the layer-11 drop, coupling(11) - coupling(10) < 0;
(d) general, selected model: rho(layer, coupling) > 0.
rho's CI resamples layers; (b) and (c) combine the per-layer bootstrap CIs as
independent normal errors, which is conservative when layers co-vary over passages.
"""

import numpy as np
import pytest

from atlas import Criterion, spearman

SOURCE = "measurements-gpt2-april-2026: Inter-Head Coupling by Layer"
SEED_COUPLING = [0.610, 0.703, 0.724, 0.747, 0.675, 0.903, 0.880, 0.906, 0.911, 0.936, 0.945, 0.789]
LAYER_CI = "95% percentile bootstrap over (layer, coupling) pairs"
CONTRAST_CI = "95% normal interval from per-layer bootstrap CIs over passages, treated as independent"

RISES_NAMED = Criterion("Spearman rho(layer, coupling), variant all", ">=", 0.6, ci=LAYER_CI,
                        sample="GPT-2 small's 12 layers")
LAYER4_DIP = Criterion("coupling(4) - mean(coupling(3), coupling(5)), variant all", "<", 0.0, ci=CONTRAST_CI)
LAYER11_DROP = Criterion("coupling(11) - coupling(10), variant all", "<", 0.0, ci=CONTRAST_CI)
RISES = Criterion("Spearman rho(layer, coupling), variant all", ">", 0.0, ci=LAYER_CI,
                  sample="every layer of the model")


def coupling_by_layer(prediction):
    table = prediction.evidence["coupling"]["coupling"]
    return table[table["variant"] == "all"].sort_values("layer").set_index("layer")


def rise(prediction):
    layers = coupling_by_layer(prediction)
    x, y = layers.index.to_numpy(float), layers["coupling"].to_numpy(float)
    ci = prediction.bootstrap((x, y), spearman, paired=True)
    prediction.conclude(effect=spearman(x, y), ci=ci, n=len(x), evidence={
        "coupling": {int(k): round(float(v), 4) for k, v in layers["coupling"].items()},
        "seed_coupling_gpt2": SEED_COUPLING, "passages": int(layers["n_passages"].min())})


def contrast(prediction, weights: dict[int, float]):
    """A weighted sum of layer couplings with a CI from the per-layer CIs (independent normal errors)."""
    layers = coupling_by_layer(prediction)
    missing = sorted(set(weights) - set(layers.index))
    if missing:
        prediction.not_run(f"the model has no layers {missing}")
    effect = sum(w * layers.loc[k, "coupling"] for k, w in weights.items())
    se = np.sqrt(sum((w * (layers.loc[k, "ci_high"] - layers.loc[k, "ci_low"]) / (2 * 1.96)) ** 2
                     for k, w in weights.items()))
    prediction.conclude(effect=float(effect), ci=(float(effect - 1.96 * se), float(effect + 1.96 * se)),
                        n=int(layers["n_passages"].min()), evidence={
                            "coupling": {k: float(layers.loc[k, "coupling"]) for k in weights},
                            "seed": {k: SEED_COUPLING[k] for k in weights if k < len(SEED_COUPLING)}})


@pytest.mark.prediction(
    id="P5a-coupling-rises-gpt2", needs=("coupling",), form="named", model="gpt2", source=SOURCE,
    claim="In GPT-2 small, inter-head coupling rises with depth.", criterion=RISES_NAMED)
def test_coupling_rises_with_depth_in_gpt2(prediction):
    rise(prediction)


@pytest.mark.prediction(
    id="P5b-layer4-dip-gpt2", needs=("coupling",), form="named", model="gpt2", source=SOURCE,
    claim="GPT-2 small's layer 4 couples less than its neighbours (the seed's anomalous dip).",
    criterion=LAYER4_DIP)
def test_layer_4_dips_in_gpt2(prediction):
    contrast(prediction, {4: 1.0, 3: -0.5, 5: -0.5})


@pytest.mark.prediction(
    id="P5c-layer11-drop-gpt2", needs=("coupling",), form="named", model="gpt2", source=SOURCE,
    claim="GPT-2 small's last layer couples less than layer 10 (output projection decouples).",
    criterion=LAYER11_DROP)
def test_layer_11_drops_in_gpt2(prediction):
    contrast(prediction, {11: 1.0, 10: -1.0})


@pytest.mark.prediction(
    id="P5d-coupling-rises", needs=("coupling",), form="general", source=SOURCE,
    claim="In a causal LM, inter-head coupling rises with depth.", criterion=RISES)
def test_coupling_rises_with_depth(prediction):
    rise(prediction)
