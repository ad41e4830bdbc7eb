"""P7 — the layer-4 anomaly across scales.

Seed: measurements-gpt2-april-2026: "Layer 4 anomalous dip unexplained — test
across Pythia scales to determine if architectural or scale artifact."

Named form over pythia-70m, pythia-160m and pythia-410m: if the dip is
architectural it appears at every scale. Per scale, the dip coupling(4) -
mean(coupling(3), coupling(5)) in the seed's method (variant ``seed_flattened``) with a
BCa CI resampling passages (the three layers recomputed together). Combined: the
largest (least negative) dip must be < 0; its CI is the max of the lower ends and
the max of the upper ends (every scale must dip).
"""

import pytest

from atlas import Criterion
from atlas._evidence import layer_contrast, mean_profile

PYTHIA = ("pythia-70m", "pythia-160m", "pythia-410m")

DIP_AT_EVERY_SCALE = Criterion(
    statistic="max over Pythia scales of coupling(4) - mean(coupling(3), coupling(5)), variant seed_flattened",
    direction="<", threshold=0.0,
    ci="per scale: 95% BCa bootstrap over passages; combined: max of lower ends, max of upper ends",
    sample="pythia-70m, pythia-160m, pythia-410m")


@pytest.mark.prediction(
    id="P7-layer4-dip-across-pythia", needs=("coupling",), form="named", model=PYTHIA,
    source="measurements-gpt2-april-2026: Inter-Head Coupling by Layer, layer 4 note",
    claim="The layer-4 coupling dip is architectural: it appears at every Pythia scale.",
    criterion=DIP_AT_EVERY_SCALE)
def test_layer_4_dips_at_every_pythia_scale(prediction):
    dips = {}
    for name in PYTHIA:
        passages = prediction.evidence["coupling", name]["coupling_passages"]
        profile = mean_profile(passages[passages["variant"] == "seed_flattened"], "coupling")
        effect, (lo, hi) = layer_contrast(profile, {4: 1.0, 3: -0.5, 5: -0.5},
                                          n_resamples=prediction.profile.bootstrap_resamples)
        dips[name] = (effect, lo, hi)
    prediction.conclude(effect=max(d[0] for d in dips.values()),
                        ci=(max(d[1] for d in dips.values()), max(d[2] for d in dips.values())),
                        n=len(dips), evidence={"dips": dips})
