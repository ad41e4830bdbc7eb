"""P6 — the attention probe against the Framework's own coupling, and coupling against curvature.

Seed: framework-v12-navigator, Coupling: "H_ij = d2L/dtheta_i dtheta_j (off-diagonal
Hessian)", "causally determines viscosity via eigenvalue calculation";
measurements-gpt2-april-2026, next step: "compute actual Hessian eigenvalue spectrum and
measure correlation against the attention probe values recorded here".

Per layer, the probe is the coupling instrument's default variant (row-centred; under
grouped-query attention its ``_cross_kv`` form, whose pairs match the Hessian's units, the
KV groups); ``hessian_coupling`` is the normalised off-diagonal Hessian between the layer's
heads. Criteria, fixed before the data:
(a) named, gpt2, and (b) general: Spearman rho(probe coupling, Hessian coupling) > 0 (the
    seed variant's rho is reported beside it);
(c) general, against curvature: ``test_p6c_coupling_curvature.py``.
A claim about layers, of which one model's smooth profiles are one draw: the interval is over layers, at
their effective number (Bretherton et al. 1999; ``atlas.evidence``). Resampling the probe's passages and
drawing each Hessian layer from its probe error gives the measurement's own precision, reported beside it.
"""

from dataclasses import replace

import pytest

from atlas import Criterion
from atlas.evidence import ParametricProfile, layer_correlation, mean_profile
from atlas.simulate.layers import LayerWorld, nulls

SOURCE = ("framework-v12-navigator: Coupling 'H_ij = off-diagonal Hessian', 'causally determines viscosity'; "
          "measurements-gpt2-april-2026: next step")
RHO_CI = "95% Fisher-z interval at the effective number of independent layers (Bretherton et al. 1999)"
PROBE_TRACKS_HESSIAN = Criterion(
    statistic="Spearman rho(probe coupling (row_centred; _cross_kv under GQA), Hessian coupling between heads)",
    direction=">", threshold=0.0, ci=RHO_CI, sample="every layer; the Hessian on one batch spread over the domains",
    unit="layers", scope="across models", sesoi=0.5, scale="correlation")


def probe(prediction, family: str = "row_centred"):
    passages = prediction.evidence["coupling"]["coupling_passages"]
    variant = family + "_cross_kv" if f"{family}_cross_kv" in set(passages["variant"]) else family
    return variant, mean_profile(passages[passages["variant"] == variant], "coupling")


def against_hessian_coupling(prediction):
    layers = prediction.evidence["hessian_coupling"]["hessian_coupling_layers"]
    hessian = ParametricProfile(layers["layer"].to_numpy(), layers["coupling"].to_numpy(float),
                                layers["stderr"].to_numpy(float), int(layers["n_probes"].iloc[0]))
    variant, default = probe(prediction)
    result = layer_correlation(default, hessian)
    seed_variant, seed = probe(prediction, "seed_flattened")
    seed_result = layer_correlation(seed, hessian)
    prediction.conclude(effect=result.rho, ci=result.ci, n=result.n_layers, evidence={
        **result.evidence(), "variant": variant, "hessian_coupling": dict(zip(hessian.layers.tolist(),
                                                                           hessian.profile.round(4).tolist())),
        "seed_variant": {"variant": seed_variant, "rho": seed_result.rho, "ci": list(seed_result.ci)},
        "hessian_tokens": int(layers["n_tokens"].iloc[0])})


NEEDS = {"coupling": {}, "hessian_coupling": {}}
LINKED = ("coupling", "hessian_coupling")


@pytest.mark.prediction(
    id="P6a-probe-tracks-hessian-gpt2", form="named", model="gpt2", source=SOURCE, needs=NEEDS,
    claim="In GPT-2 small, the layers whose heads attend alike are those whose heads are Hessian-coupled.",
    criterion=replace(PROBE_TRACKS_HESSIAN, scope="this model"), nulls=nulls(LINKED, layers=12),
    alternative=LayerWorld("layer profiles correlated 0.5", LINKED, link=0.5, layers=12))
def test_probe_tracks_hessian_coupling_in_gpt2(prediction):
    against_hessian_coupling(prediction)


@pytest.mark.prediction(
    id="P6b-probe-tracks-hessian", form="general", source=SOURCE, needs=NEEDS,
    claim="In a causal LM, the layers whose heads attend alike are those whose heads are Hessian-coupled.",
    criterion=PROBE_TRACKS_HESSIAN, nulls=nulls(LINKED),
    alternative=LayerWorld("layer profiles correlated 0.5", LINKED, link=0.5))
def test_probe_tracks_hessian_coupling(prediction):
    against_hessian_coupling(prediction)
