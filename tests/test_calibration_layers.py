"""Trend claims over layers: one model's layer profile is one draw, so a test of them must hold its false
"supported" rate when every passage shares a smooth profile with no trend (issue 19, item 2).

Simulations are small and seeded; the full rates are measured by ``atlas calibrate P1 P5 P6 --reps 200``.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from atlas import Outcome
from atlas.calibration import discover, judge_evidence
from atlas._evidence import LayerSample, fixed_profile, layer_correlation, rho_over_layers
from atlas._profiles import PROFILES
from atlas._stats import one_sided_p
from atlas.simulate.layers import LayerWorld, latent, nulls

PREDICTIONS = Path(__file__).resolve().parents[1] / "predictions"
PROFILE = dataclasses.replace(PROFILES["quick"], bootstrap_resamples=200)
L, REPS = 30, 150


def passage_sample(rng, shared: str, passages: int, layers: int = L) -> LayerSample:
    """The per-layer mean over ``passages`` passages that share one ``shared`` profile, each with its own AR(1)
    deviation from it."""
    values = latent(rng, shared, 1, layers) + latent(rng, "ar1", passages, layers)  # [passages, layers]
    return LayerSample(np.arange(layers), passages, lambda counts: counts @ values / counts.sum(1, keepdims=True))


def false_supported(shared: str, passages: int, against_depth: bool) -> tuple[float, float]:
    """The share of shared-profile nulls whose 95% interval excludes 0 upwards: over layers (the criterion's) and
    resampling passages (the measurement's precision, the old criterion)."""
    rng = np.random.default_rng([passages, against_depth, len(shared)])
    over_layers, over_passages = [], []
    for rep in range(REPS):
        y = passage_sample(rng, shared, passages)
        x = fixed_profile(np.arange(L)) if against_depth else passage_sample(rng, shared, passages)
        result = layer_correlation(x, y, n_resamples=100, seed=rep)
        over_layers.append(result.ci[0] > 0)
        over_passages.append(result.within[0] > 0)
    return float(np.mean(over_layers)), float(np.mean(over_passages))


@pytest.mark.parametrize("against_depth", [True, False], ids=["against depth", "two profiles"])
@pytest.mark.parametrize("passages", [8, 64])
@pytest.mark.parametrize("shared", ["ar1", "walk"])
def test_shared_smooth_profiles_are_not_called_a_trend(shared, passages, against_depth):
    """The criterion's interval keeps false "supported" within 5% (nominal 2.5%) where resampling passages, the
    layer profile held fixed, calls one model's trendless smooth profile a trend 9-43% of the time."""
    layers, passages_only = false_supported(shared, passages, against_depth)
    assert layers <= 0.05, (layers, passages_only)
    assert passages_only > 0.05, (layers, passages_only)  # the old criterion, kept as evidence: not a test of layers


def test_the_interval_over_layers_is_fisher_z_at_the_effective_layers_and_its_p_value_agrees():
    ci = rho_over_layers(0.5, 13.0)
    z, half = np.arctanh(0.5), 1.959964 * np.sqrt(1.06 / 10)
    assert ci.unit == "layers" and ci == pytest.approx((np.tanh(z - half), np.tanh(z + half)))
    for threshold, direction in ((0.0, ">"), (0.1, ">"), (0.9, "<")):
        p = one_sided_p(ci, threshold, direction)
        assert (p < 0.025) == (ci[0] > threshold if direction == ">" else ci[1] < threshold), (threshold, p)
    assert np.isnan(rho_over_layers(0.9, 3.0)).all()  # three effective layers or fewer: no interval


def test_smoothness_costs_effective_layers():
    rng = np.random.default_rng(0)
    smooth = layer_correlation(passage_sample(rng, "walk", 24), passage_sample(rng, "walk", 24), n_resamples=50)
    white = layer_correlation(passage_sample(rng, "white", 24), passage_sample(rng, "white", 24), n_resamples=50)
    assert smooth.n_eff < 12 < white.n_eff
    assert np.diff(smooth.ci) > np.diff(white.ci) and smooth.ci.unit == white.ci.unit == "layers"


def test_the_simulated_tables_are_the_instruments_tables():
    from atlas._schema import coerce, validate_table

    world = LayerWorld("all", ("coupling", "ablation", "hessian_coupling", "hessian"), shared="walk", layers=6)
    for tables in world(np.random.default_rng(1)).values():
        for name, table in tables.items():
            validate_table(name, coerce(name, table))
    with pytest.raises(ValueError):
        LayerWorld("unknown", ("perplexity",))


def declared(prediction_id: str):
    module = {"P1": "test_p1_ablation_resistance.py", "P5": "test_p5_coupling_by_depth.py",
              "P6a": "test_p6_hessian_coupling.py", "P6b": "test_p6_hessian_coupling.py",
              "P6c": "test_p6c_coupling_curvature.py"}
    path = next(PREDICTIONS / m for prefix, m in module.items() if prediction_id.startswith(prefix))
    return discover([path], (prediction_id,))[0]


def outcome(prediction_id: str, world: LayerWorld, seed: int = 0, edit=None) -> Outcome:
    evidence = world(np.random.default_rng(seed))
    if edit:
        edit(evidence)
    return judge_evidence(declared(prediction_id), evidence, PROFILE).outcome


def unconverged(evidence):
    evidence["hessian"]["hessian"].loc[3, "converged"] = False


# per prediction: its instruments, the sign of its claim and its layer count; a relation of +-1 without noise is
# exactly monotone (supported or refuted), four layers give no interval (inconclusive)
TREND = {"P1b": (("coupling", "ablation"), -1, 30), "P5a": (("coupling",), 1, 12), "P5d": (("coupling",), 1, 30),
         "P6a": (("coupling", "hessian_coupling"), 1, 12), "P6b": (("coupling", "hessian_coupling"), 1, 30),
         "P6c": (("coupling", "hessian"), 1, 30)}


@pytest.mark.parametrize("prediction_id", sorted(TREND))
def test_each_layer_trend_prediction_reaches_every_outcome(prediction_id):
    instruments, sign, layers = TREND[prediction_id]
    link = "rise" if prediction_id.startswith("P5") else "link"
    exact = dict(shared="none", noise="none", layers=layers, rise=1.0)

    def world(**changes):
        return LayerWorld(prediction_id, instruments, **{**exact, **changes})

    assert outcome(prediction_id, world(**{link: sign})) is Outcome.SUPPORTED
    assert outcome(prediction_id, world(**{link: -sign})) is Outcome.REFUTED
    assert outcome(prediction_id, world(**{link: sign}, layers=4)) is Outcome.INCONCLUSIVE
    assert outcome(prediction_id, LayerWorld(prediction_id, instruments, layers=layers)) in (
        Outcome.INCONCLUSIVE, Outcome.NO_EFFECT)  # a shared AR(1) profile and no relation
    if prediction_id == "P6c":  # supported data, but the eigenvalues did not converge
        assert outcome(prediction_id, world(link=1.0), edit=unconverged) is Outcome.INCONCLUSIVE


def test_a_flat_independent_profile_over_many_effective_layers_is_no_effect_of_interest():
    world = LayerWorld("flat", ("coupling",), shared="none", noise="white", passages=8)
    outcomes = {outcome("P5d", world, seed) for seed in range(4)}
    assert Outcome.NO_EFFECT in outcomes and Outcome.SUPPORTED not in outcomes


def test_the_gpt2_layer_contrast_reaches_every_outcome_over_passages():
    deep_cheaper = dict(instruments=("ablation",), shared="none", noise="ar1", rise=1.0, layers=12)
    assert outcome("P1a", LayerWorld("cheaper", **deep_cheaper, link=-0.5)) is Outcome.SUPPORTED
    assert outcome("P1a", LayerWorld("dearer", **deep_cheaper, link=0.5)) is Outcome.REFUTED
    assert outcome("P1a", LayerWorld("flat", **deep_cheaper, link=0.0, passages=8)) is Outcome.INCONCLUSIVE
    assert outcome("P1a", LayerWorld("flat", **deep_cheaper, link=0.0)) is Outcome.NO_EFFECT  # within 0.1 PPL


def test_the_layer_contrasts_of_p5_still_resample_passages():
    world = LayerWorld("walk", ("coupling",), layers=12, passages=16)
    for prediction_id in ("P5b", "P5c"):
        trial = judge_evidence(declared(prediction_id), world(np.random.default_rng(0)), PROFILE)
        assert trial.criterion.unit == "passages" and trial.verdict["n"] == 16
        assert trial.outcome in (Outcome.SUPPORTED, Outcome.REFUTED, Outcome.INCONCLUSIVE)


def test_trend_predictions_declare_layers_their_scope_and_the_shared_nulls():
    for prediction_id, scope in (("P1b", "across models"), ("P5a", "this model"), ("P5d", "across models"),
                                 ("P6a", "this model"), ("P6b", "across models"), ("P6c", "across models")):
        found = declared(prediction_id)
        assert (found.criterion.unit, found.criterion.scope) == ("layers", scope), prediction_id
        assert set(found.nulls) == set(nulls(("coupling",))) and found.alternative is not None
    p1a = declared("P1a")
    assert (p1a.criterion.unit, p1a.criterion.scope) == ("passages", "this model") and len(p1a.nulls) == 3


@pytest.mark.parametrize("prediction_id, layer", [("P5b", 4), ("P5c", 11)])
def test_the_named_layer_contrasts_of_p5_reach_every_outcome(prediction_id, layer):
    """A flat profile with its named layer lowered (the dip, the drop) or raised, or left flat (the CI straddles 0),
    passages deviating from it as white noise."""
    def shift(by):
        def edit(evidence):
            table = evidence["coupling"]["coupling_passages"]
            table.loc[table["layer"] == layer, "coupling"] += by
        return edit

    flat = LayerWorld("flat", ("coupling",), shared="none", noise="white", layers=12)
    assert outcome(prediction_id, flat, edit=shift(-0.3)) is Outcome.SUPPORTED
    assert outcome(prediction_id, flat, edit=shift(0.3)) is Outcome.REFUTED
    assert outcome(prediction_id, flat, seed=1) is Outcome.INCONCLUSIVE  # (seed 0 falls in P5c's 5%: refuted)
