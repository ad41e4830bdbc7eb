"""P5 — inter-head coupling rises with depth.

Seed: measurements-gpt2-april-2026, "Inter-Head Coupling by Layer" (GPT-2 small, single probe input): "Monotonic
increase with depth. Peak at layers 9-10. Layer 4 anomalous dip unexplained", layer 11: "Drop — output projection
decouples". Named forms: the seed's ``seed_flattened`` (maps flattened over the causal triangle, which the shared
causal row profile couples); general: ``row_centred``, which removes it. (a) gpt2: rho(layer, coupling) >= 0.6;
(b) coupling(4) - mean(coupling(3), coupling(5)) < 0; (c) coupling(11) - coupling(10) < 0; (d) general: rho > 0.
A rise is about layers (a smooth trendless profile correlates with depth by chance): over layers, at their effective
number (Bretherton et al. 1999); a contrast of named layers is about this model: over passages, against FLAT.
"""

import pytest

from atlas import Criterion
from atlas.evidence import fixed_profile, layer_contrast, layer_correlation, mean_profile
from atlas.simulate.layers import LayerWorld, nulls, within_model_nulls

SOURCE = "measurements-gpt2-april-2026: Inter-Head Coupling by Layer"
NAMED = dict(needs=("coupling",), form="named", model="gpt2", source=SOURCE)
SEED_COUPLING = [0.610, 0.703, 0.724, 0.747, 0.675, 0.903, 0.880, 0.906, 0.911, 0.936, 0.945, 0.789]
RHO_CI, CONTRAST_CI = ("95% Fisher-z interval at the effective number of independent layers (Bretherton 1999)",
                       "95% BCa bootstrap over passages, the layers recomputed together per resample")
RISES_NAMED = Criterion("Spearman rho(layer, coupling), variant seed_flattened", ">=", 0.6, ci=RHO_CI,
                        sample="GPT-2 small's 12 layers", unit="layers", scope="this model", sesoi=0.3,
                        scale="correlation")
LAYER4_DIP, LAYER11_DROP = (Criterion(f"{c}, variant seed_flattened", "<", 0.0, ci=CONTRAST_CI, scale="difference")
                            for c in ("coupling(4) - mean(coupling(3), coupling(5))", "coupling(11) - coupling(10)"))
FLAT, FALLS = within_model_nulls(("coupling",), 12), LayerWorld("falls", ("coupling",), "none", rise=-1, layers=12)
RISES = Criterion("Spearman rho(layer, coupling), variant row_centred", ">", 0.0, ci=RHO_CI,
                  sample="every layer of the model", unit="layers", scope="across models", sesoi=0.5,
                  scale="correlation")


def coupling(prediction, variant: str):
    return mean_profile(prediction.evidence["coupling"]["coupling_passages"].query("variant == @variant"), "coupling")


def rise(prediction, variant: str):
    profile = coupling(prediction, variant)
    result = layer_correlation(fixed_profile(profile.layers), profile)
    prediction.conclude(effect=result.rho, ci=result.ci, n=result.n_layers, evidence={
        **result.evidence(), "coupling": dict(zip(profile.layers.tolist(), profile.profile.round(4).tolist())),
        "seed_coupling_gpt2": SEED_COUPLING})


def contrast(prediction, weights: dict[int, float]):
    profile = coupling(prediction, "seed_flattened")
    if missing := sorted(set(weights) - set(profile.layers.tolist())):
        prediction.not_run(f"the model has no layers {missing}")
    effect, ci = layer_contrast(profile, weights)
    prediction.conclude(effect=effect, ci=ci, n=profile.n, evidence={
        "coupling": {k: float(v) for k, v in zip(profile.layers, profile.profile) if k in weights},
        "seed": {k: SEED_COUPLING[k] for k in weights if k < len(SEED_COUPLING)}})


@pytest.mark.prediction(
    id="P5a-coupling-rises-gpt2", **NAMED, claim="In GPT-2 small, inter-head coupling rises with depth.",
    criterion=RISES_NAMED, nulls=nulls(("coupling",), layers=12),
    alternative=LayerWorld("rise 0.9", ("coupling",), rise=0.9, layers=12))
def test_coupling_rises_with_depth_in_gpt2(prediction):
    rise(prediction, "seed_flattened")


@pytest.mark.prediction(id="P5b-layer4-dip-gpt2", **NAMED, criterion=LAYER4_DIP, nulls=FLAT,
                        claim="GPT-2 small's layer 4 couples less than its neighbours (the seed's anomalous dip).")
def test_layer_4_dips_in_gpt2(prediction):
    contrast(prediction, {4: 1.0, 3: -0.5, 5: -0.5})


@pytest.mark.prediction(id="P5c-layer11-drop-gpt2", **NAMED, criterion=LAYER11_DROP, nulls=FLAT, alternative=FALLS,
                        claim="GPT-2 small's last layer couples less than layer 10 (output projection decouples).")
def test_layer_11_drops_in_gpt2(prediction):
    contrast(prediction, {11: 1.0, 10: -1.0})


@pytest.mark.prediction(
    id="P5d-coupling-rises", needs=("coupling",), form="general", source=SOURCE,
    claim="In a causal LM, inter-head coupling rises with depth.", criterion=RISES,
    nulls=nulls(("coupling",)), alternative=LayerWorld("rise 0.5", ("coupling",), rise=0.5))
def test_coupling_rises_with_depth(prediction):
    rise(prediction, "row_centred")
