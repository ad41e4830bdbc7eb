"""P6 — Hessian <-> coupling: the layers whose heads move together are the sharply curved ones.

Seed: framework-v12-navigator, Coupling: "Causally determines viscosity via eigenvalue
calculation"; Viscosity: "Hessian eigenvalue spectrum {lambda_i} ... determined by
coupling"; measurements-gpt2-april-2026, next step: "PyHessian run on GPT-2 small to
compute actual Hessian eigenvalue spectrum and measure correlation against the
attention probe values recorded here".

Per layer: the top eigenvalue of the loss Hessian restricted to that layer's
attention parameters (instrument ``hessian``, blocks "attention", Lanczos) and the
layer's inter-head coupling (instrument ``coupling``, variant ``all``). Coupling is
the off-diagonal Hessian in the Framework's reading, and off-diagonal mass raises
the spectral radius, so the direction is fixed as positive:

(a) named, gpt2: Spearman rho(layer coupling, layer top attention eigenvalue) > 0;
(b) general, selected model: the same.
The CI resamples (coupling, eigenvalue) layer pairs; the eigenvalue's own Lanczos
error is far below the spread across layers and is not propagated.
"""

import pytest

from atlas import Criterion, spearman

SOURCE = ("framework-v12-navigator: Coupling 'causally determines viscosity via eigenvalue calculation'; "
          "measurements-gpt2-april-2026: next step")

NEEDS = {"coupling": {}, "hessian": {"blocks": "attention"}}  # per-layer attention blocks
COUPLING_SETS_CURVATURE = Criterion(
    statistic="Spearman rho(layer coupling (variant all), top Hessian eigenvalue of the layer's attention block)",
    direction=">", threshold=0.0, ci="95% percentile bootstrap over layers",
    sample="every layer the profile's hessian settings cover; one batch of passages for the Hessian")


def judge(prediction):
    coupling = prediction.evidence["coupling"]["coupling"]
    coupling = coupling[coupling["variant"] == "all"].set_index("layer")["coupling"]
    hessian = prediction.evidence["hessian"]["hessian"]
    top = hessian[(hessian["kind"] == "eigenvalue") & (hessian["index"] == 0)]
    top = top.assign(layer=top["block"].str.extract(r"layer\.(\d+)\.", expand=False).astype(int)).set_index("layer")
    layers = sorted(set(coupling.index) & set(top.index))
    x, y = coupling.loc[layers].to_numpy(float), top.loc[layers, "value"].to_numpy(float)
    ci = prediction.bootstrap((x, y), spearman, paired=True)
    prediction.conclude(effect=spearman(x, y), ci=ci, n=len(layers), evidence={
        "coupling": dict(zip(layers, x.round(4).tolist())),
        "top_eigenvalue": dict(zip(layers, y.round(6).tolist())),
        "hessian_converged": bool(top.loc[layers, "converged"].all()),
        "hessian_tokens": int(hessian["n_tokens"].iloc[0])})


@pytest.mark.prediction(
    id="P6a-hessian-coupling-gpt2", form="named", model="gpt2", source=SOURCE, needs=NEEDS,
    claim="In GPT-2 small, layers with higher inter-head coupling have a larger top Hessian eigenvalue in "
          "their attention block.",
    criterion=COUPLING_SETS_CURVATURE)
def test_coupled_layers_are_sharply_curved_in_gpt2(prediction):
    judge(prediction)


@pytest.mark.prediction(
    id="P6b-hessian-coupling", form="general", source=SOURCE, needs=NEEDS,
    claim="In a causal LM, layers with higher inter-head coupling have a larger top Hessian eigenvalue in "
          "their attention block.",
    criterion=COUPLING_SETS_CURVATURE)
def test_coupled_layers_are_sharply_curved(prediction):
    judge(prediction)
