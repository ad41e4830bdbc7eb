"""P6c — coupling sets curvature: the Framework's "coupling causally determines viscosity".

Seed: framework-v12-navigator, Coupling: "Causally determines viscosity via eigenvalue
calculation"; Viscosity: "Hessian eigenvalue spectrum {lambda_i} ... determined by coupling".

Per layer: the probe coupling (the coupling instrument's default variant, row-centred) and the
top eigenvalue of the loss Hessian restricted to that layer's attention parameters
(instrument ``hessian``, blocks "attention", Lanczos). Off-diagonal mass raises the spectral
radius, so the direction is fixed as positive: Spearman rho(probe coupling, top eigenvalue) > 0.
"Top" is the largest eigenvalue (index 0), not the largest in magnitude: sharpness is the
curvature along which a descent step overshoots (Keskar et al. 2016), and layer 0's
largest-magnitude eigenvalue on the offline model is a negative one (a saddle direction).
Unconverged eigenvalues (Lanczos residual above tol) leave the prediction inconclusive. The eigenvalues
are of one batch spread over the domains. A claim about layers, of which one model's smooth profiles are one
draw: the interval is over layers, at their effective number (Bretherton et al. 1999; ``atlas.evidence``).
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.evidence import fixed_profile, layer_correlation, mean_profile
from atlas.simulate.layers import LayerWorld, nulls

SOURCE = "framework-v12-navigator: Coupling 'causally determines viscosity via eigenvalue calculation'"
COUPLING_SETS_CURVATURE = Criterion(
    statistic="Spearman rho(probe coupling (row_centred), largest Hessian eigenvalue of the attention block)",
    direction=">", threshold=0.0, ci="95% Fisher-z interval at the effective number of independent layers "
    "(Bretherton et al. 1999)", sample="every layer the profile's hessian settings cover; one batch spread over the "
    "domains", unit="layers", scope="across models", sesoi=0.5, scale="correlation")
LINKED = ("coupling", "hessian")


@pytest.mark.prediction(
    id="P6c-coupling-sets-curvature", form="general", source=SOURCE,
    needs={"coupling": {}, "hessian": {"blocks": "attention"}},
    claim="In a causal LM, layers with higher inter-head coupling are more sharply curved in their attention block.",
    criterion=COUPLING_SETS_CURVATURE, nulls=nulls(LINKED),
    alternative=LayerWorld("layer profiles correlated 0.5", LINKED, link=0.5))
def test_coupled_layers_are_sharply_curved(prediction):
    passages = prediction.evidence["coupling"]["coupling_passages"]
    coupling = mean_profile(passages[passages["variant"] == "row_centred"], "coupling")
    hessian = prediction.evidence["hessian"]["hessian"]
    top = hessian[(hessian["kind"] == "eigenvalue") & (hessian["index"] == 0)]
    layers = top["block"].str.extract(r"layer\.(\d+)\.", expand=False).astype(int).to_numpy()
    result = layer_correlation(coupling, fixed_profile(layers, top["value"].to_numpy(float)))
    converged = bool(top["converged"].all())
    prediction.conclude(effect=result.rho, ci=result.ci if converged else (np.nan, np.nan), n=result.n_layers,
                        reason="" if converged else f"{int((~top['converged']).sum())} of {len(top)} top "
                        "eigenvalues did not converge: the curvature profile is not known well enough to judge",
                        evidence={**result.evidence(), "hessian_converged": converged,
                                  "top_eigenvalue": dict(zip(layers.tolist(), top["value"].round(6).tolist()))})
