"""P7 — the layer-4 anomaly across scales.

Seed: measurements-gpt2-april-2026: "Layer 4 anomalous dip unexplained — test
across Pythia scales to determine if architectural or scale artifact."

Named form over pythia-70m, pythia-160m and pythia-410m: if the dip is
architectural it appears at every scale. Effect: the largest (least negative)
of the three dips coupling(4) - mean(coupling(3), coupling(5)); it must be < 0,
with each dip's CI from its per-layer bootstrap CIs (independent normal errors)
and the combined CI (max of the lower ends, max of the upper ends).
"""

import numpy as np
import pytest

from atlas import Criterion

PYTHIA = ("pythia-70m", "pythia-160m", "pythia-410m")

DIP_AT_EVERY_SCALE = Criterion(
    statistic="max over Pythia scales of coupling(4) - mean(coupling(3), coupling(5)), variant all",
    direction="<", threshold=0.0,
    ci="per scale: 95% normal interval from per-layer bootstrap CIs; combined: max of ends",
    sample="pythia-70m, pythia-160m, pythia-410m")


@pytest.mark.prediction(
    id="P7-layer4-dip-across-pythia", needs=("coupling",), form="named", model=PYTHIA,
    source="measurements-gpt2-april-2026: Inter-Head Coupling by Layer, layer 4 note",
    claim="The layer-4 coupling dip is architectural: it appears at every Pythia scale.",
    criterion=DIP_AT_EVERY_SCALE)
def test_layer_4_dips_at_every_pythia_scale(prediction):
    dips = {}
    for name in PYTHIA:
        table = prediction.evidence["coupling", name]["coupling"]
        layers = table[table["variant"] == "all"].set_index("layer")
        effect = layers.loc[4, "coupling"] - (layers.loc[3, "coupling"] + layers.loc[5, "coupling"]) / 2
        half = [(layers.loc[k, "ci_high"] - layers.loc[k, "ci_low"]) / 2 for k in (3, 4, 5)]
        se = np.sqrt(half[1] ** 2 + (half[0] ** 2 + half[2] ** 2) / 4)  # half-widths are 1.96 se
        dips[name] = (float(effect), float(effect - se), float(effect + se))
    prediction.conclude(effect=max(d[0] for d in dips.values()),
                        ci=(max(d[1] for d in dips.values()), max(d[2] for d in dips.values())),
                        n=len(dips), evidence={"dips": dips})
