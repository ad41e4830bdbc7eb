import copy
import math

import numpy as np
import pytest
import torch
from _corpora import first_domains

from transformers.pytorch_utils import Conv1D

from atlas import run_instrument, validate_table
from atlas._scoring import batches, token_budget, token_nll
from atlas.instruments import measure_stiffness, radius_stiffness, stiffness
from atlas.instruments._descent import Probe, start_point
from atlas.instruments.stiffness import filter_axes, filter_normalised_direction


@pytest.fixture(scope="module")
def small(starter):
    return first_domains(starter, 3, 2)


def test_zero_radius_returns_exactly_to_the_control(tiny, small):
    table = measure_stiffness(tiny, small, radii="0,0.1", directions=2, steps=2, lr=0.05, max_tokens=96,
                              progress=False)["stiffness"]
    validate_table("stiffness", table)
    zero = table[table["radius"] == 0]
    assert len(zero) == 2
    # θ* + 0 d is θ* bit for bit and the steps repeat the control's arithmetic: equality, not closeness
    assert (zero["loss_perturbed"] == zero["loss_start"]).all() and (zero["rise"] == 0).all()
    assert (zero["loss_recovered"] == zero["loss_control"]).all()
    assert (zero["distance_perturbed"] == 0).all() and (zero["distance_after"] == 0).all()
    assert zero["recovered"].isna().all() and zero["returned"].isna().all()
    assert (zero["recovered_undefined"] == "no push (radius 0)").all()
    assert (zero["distance_to_start"] > 0).all()  # the control itself moved
    pushed = table[table["radius"] > 0]
    assert (pushed["distance_perturbed"] > 0).all()
    raised = pushed["rise"] > 0  # a random tiny model's loss can fall or rise under a push: defined where it rose
    assert (pushed["recovered"].notna() == raised).all() and (pushed["recovered_undefined"].isna() == raised).all()


def test_recovered_is_undefined_with_its_reason_when_the_push_lowered_the_loss(tiny_gpt2, small, monkeypatch):
    # a push along the descent direction lowers the loss: there is no rise to recover, so no share of it
    probe = Probe(tiny_gpt2, token_budget(tiny_gpt2, small, 64), 8)
    start = start_point(tiny_gpt2)
    downhill = probe.descend(start, 1, 1.0)
    monkeypatch.setattr(stiffness, "filter_normalised_direction",
                        lambda theta, *args, **kwargs: {k: downhill[k] - theta[k] for k in theta})
    table = measure_stiffness(tiny_gpt2, small, radii="0.5", directions=1, steps=1, lr=0.05, max_tokens=64,
                              progress=False)["stiffness"]
    validate_table("stiffness", table)
    row = table.iloc[0]
    assert row["rise"] < 0 and np.isnan(row["recovered"])
    assert row["recovered_undefined"] == "the push did not raise the loss (no rise to recover)"
    assert np.isfinite(row["returned"])  # the weights' share is defined whatever the loss did


def _reference_direction(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Li et al.'s filter normalisation written out per layout: a filter is an output unit, a column of a
    Conv1D weight (stored [in, out]), a row of a Linear weight ([out, in]) or of an embedding ([vocab, d])."""
    columns = {id(m.weight) for m in model.modules() if isinstance(m, Conv1D)}
    gen, direction = torch.Generator().manual_seed(seed), {}
    for name, p in model.named_parameters():
        t = p.detach()
        if t.dim() < 2:
            direction[name] = torch.zeros_like(t)
            continue
        d = torch.randn(t.shape, generator=gen)
        units = (t.T, d.T) if id(p) in columns else (t, d)  # [units, rest] views
        direction[name] = d * (units[0].norm(dim=1) / units[1].norm(dim=1)).reshape(
            (1, -1) if id(p) in columns else (-1, 1))
    return direction


def test_filters_are_output_units_for_conv1d_as_for_linear(tiny):
    model = tiny.model
    theta = start_point(tiny)
    d, reference = filter_normalised_direction(theta, filter_axes(model), seed=0), _reference_direction(model, 0)
    for name in theta:
        torch.testing.assert_close(d[name], reference[name])
    conv = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    for name in conv:  # GPT-2: every output unit (a column) has its own weights' norm, exactly
        w, dw = theta[f"{name}.weight"], d[f"{name}.weight"]
        torch.testing.assert_close(dw.norm(dim=0), w.norm(dim=0))
    assert bool(conv) == (tiny.name == "tiny-gpt2")


def test_directions_are_filter_normalised_seeded_and_leave_one_dimensional_tensors(tiny_gpt2):
    theta = start_point(tiny_gpt2)
    axes = filter_axes(tiny_gpt2.model)
    d = filter_normalised_direction(theta, axes, seed=0)
    for name, t in theta.items():
        if t.dim() < 2:
            assert (d[name] == 0).all(), name
        else:
            rest = 1 - axes[name]
            torch.testing.assert_close(d[name].norm(dim=rest), t.norm(dim=rest))
    again, other = filter_normalised_direction(theta, axes, seed=0), filter_normalised_direction(theta, axes, seed=1)
    assert all(torch.equal(d[k], again[k]) for k in d)
    assert not all(torch.equal(d[k], other[k]) for k in d if theta[k].dim() >= 2)


def _loss(model, encoded, lm) -> torch.Tensor:
    n = sum(len(ids) - 1 for ids in encoded)
    return sum(token_nll(model, ids, mask).sum() for _, ids, mask in batches(encoded, 8, lm.doc_start_id, "cpu")) / n


def test_push_and_one_step_match_an_independent_sgd_step(tiny, small):
    lm = tiny
    table = measure_stiffness(lm, small, radii="0.2", directions=1, steps=1, lr=0.1, max_tokens=80,
                              progress=False)["stiffness"]
    row = table.iloc[0]
    theta = start_point(lm)
    direction = _reference_direction(lm.model, 0)
    moved = math.sqrt(sum(float(theta[k].double().square().sum()) for k in theta if theta[k].dim() >= 2))
    assert row["distance_perturbed"] == pytest.approx(0.2 * moved, rel=1e-5)  # |r d| = r |θ| filter by filter
    model = copy.deepcopy(lm.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * direction[name])
    encoded = token_budget(lm, small, 80)
    with torch.enable_grad():
        loss = _loss(model, encoded, lm)
    assert row["loss_perturbed"] == pytest.approx(loss.item(), rel=1e-5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert row["loss_recovered"] == pytest.approx(float(_loss(model, encoded, lm)), rel=1e-5)


def test_summary_means_over_directions(tiny_gpt2, small):
    table = measure_stiffness(tiny_gpt2, small, radii="0,0.3,3", directions=3, steps=1, lr=0.05, max_tokens=64,
                              progress=False)["stiffness"]
    summary = radius_stiffness(table, n_resamples=200)
    validate_table("stiffness_radii", summary)
    assert list(summary["radius"]) == [0, 0.3, 3] and (summary["n_directions"] == 3).all()
    at = summary.set_index("radius")
    assert np.isnan(at.loc[0, "recovered"]) and np.isnan(at.loc[0, "recovered_ci_low"])
    # on the random tiny GPT-2 no push of 0.3 raises the loss; at 3, two of the three do: the mean is theirs
    assert np.isnan(at.loc[0.3, "recovered"]) and table[table["radius"] == 3]["recovered"].notna().sum() == 2
    values = table[table["radius"] == 3]["recovered"].dropna()
    assert at.loc[3, "recovered"] == pytest.approx(values.mean())
    eps = 1e-12  # a mean of equal values can round below them
    assert values.min() - eps <= at.loc[3, "recovered_ci_low"] <= at.loc[3, "recovered_ci_high"] <= values.max() + eps


def test_run_instrument_validates_stores_and_leaves_the_model_as_found(store, tiny_gpt2, small):
    model = tiny_gpt2.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_instrument(store, tiny_gpt2, small, "stiffness", progress=False, bootstrap_resamples=100,
                            radii="0.1", directions=2, steps=1, max_tokens=64)
    assert set(store.tables(result.run.id)) == {"stiffness", "stiffness_radii"} and result.run.status == "complete"
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("settings, message", [
    ({"radii": "0.1,big"}, "radii must be a comma list"), ({"radii": "-0.1"}, "finite numbers at least 0"),
    ({"directions": 0}, "must be at least 1"), ({"steps": 0}, "must be at least 1"),
    ({"lr": 0.0}, "lr must be above 0"), ({"max_tokens": 0}, "max_tokens must be at least 1")])
def test_bad_settings_are_one_clear_error(tiny_gpt2, small, settings, message):
    with pytest.raises(ValueError, match=message):
        measure_stiffness(tiny_gpt2, small, progress=False, **settings)


@pytest.mark.slow
def test_smollm2_zero_radius_is_exact_and_a_push_raises_the_loss(smollm2, shared_corpus):
    table = measure_stiffness(smollm2, first_domains(shared_corpus, 2, 1), radii="0,0.1", directions=1, steps=1,
                              lr=0.004, max_tokens=32, progress=False)["stiffness"]
    validate_table("stiffness", table)
    zero, pushed = table.iloc[0], table.iloc[1]
    assert zero["distance_after"] == 0 and zero["loss_recovered"] == zero["loss_control"]
    assert pushed["rise"] > 0
