import copy
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import Corpus, run_instrument, validate_table
from atlas._anatomy import head_dim, output_projection
from atlas._cisp import model_checksum
from atlas._scoring import batches, encode
from atlas.instruments import layer_ablation, measure_ablation, measure_perplexity
from atlas.instruments.ablation import _record_layer_inputs, _row_nll, _run_from

ALL = 10**9  # a token budget no test corpus reaches: every passage is scored whole


@pytest.fixture(scope="module")
def few(starter):
    """Three starter passages cut to 160 characters (tiny models read bytes: ~160 tokens each)."""
    return Corpus("starter[:3][:160]", tuple(dataclasses.replace(p, text=p.text[:160]) for p in starter.passages[:3]))


def pooled_ppl(table: pd.DataFrame) -> float:
    return math.exp(table["nll_sum"].sum() / table["n_tokens"].sum())


def head_slice(lm, layer: int, head: int):
    """The weight entries of ``layer``'s output projection that read ``head`` (Conv1D is [in, out])."""
    proj, hd = output_projection(lm.model, layer), head_dim(lm.model)
    rows = slice(head * hd, (head + 1) * hd)
    return (rows, slice(None)) if type(proj).__name__ == "Conv1D" else (slice(None), rows)


def with_head_scaled(lm, layer: int, head: int, factor: float, dtype=None):
    """An independent copy of ``lm`` whose output-projection weights reading ``head`` are multiplied by ``factor``."""
    model = copy.deepcopy(lm.model)
    if dtype is not None:
        model = model.to(dtype)
    clone = dataclasses.replace(lm, model=model)
    with torch.no_grad():
        output_projection(model, layer).weight[head_slice(lm, layer, head)] *= factor
    return clone


def naive_ppl(lm, corpus, layer: int, head: int) -> float:
    """One full forward over the corpus with a pre-hook zeroing one head (the TransformerLens way)."""
    hd = head_dim(lm.model)

    def zero(module, args):
        x = args[0].clone()
        x[..., head * hd:(head + 1) * hd] = 0
        return (x,)

    handle = output_projection(lm.model, layer).register_forward_pre_hook(zero)
    try:
        return pooled_ppl(measure_perplexity(lm, corpus, progress=False)["perplexity"])
    finally:
        handle.remove()


def test_each_ablation_equals_a_copy_with_the_head_weights_zeroed(tiny, few):
    table = measure_ablation(tiny, few, max_tokens=ALL, batch_size=2, progress=False)["ablation"]
    baseline = measure_perplexity(tiny, few, progress=False)["perplexity"]
    assert (table["n_tokens"] == baseline["n_tokens"].sum()).all()
    assert table["baseline_ppl"].iloc[0] == pytest.approx(pooled_ppl(baseline), rel=1e-6)
    assert len(table) == tiny.n_layers * tiny.n_heads
    for row in table.itertuples():
        zeroed = with_head_scaled(tiny, row.layer, row.head, 0.0)
        reference = pooled_ppl(measure_perplexity(zeroed, few, progress=False)["perplexity"])
        assert row.ppl == pytest.approx(reference, rel=1e-5), (row.layer, row.head)
        assert row.delta_ppl == pytest.approx(row.ppl - row.baseline_ppl)
    assert table["delta_ppl"].abs().max() > 0  # removing a head changes something


def test_gates_at_one_reproduce_the_baseline(tiny, few):
    encoded = encode(tiny, [p.text for p in few.passages], "prepend")
    _, ids, mask = next(batches(encoded, 3, tiny.doc_start_id, tiny.device))
    with torch.no_grad():
        records, final = _record_layer_inputs(tiny.model, ids, mask)
        baseline = _row_nll(tiny.model, final, ids, mask)
        for layer in range(tiny.n_layers):
            rerun = _row_nll(tiny.model, _run_from(tiny.model, records, layer, torch.ones(3, tiny.n_heads)), ids, mask)
            assert torch.equal(rerun, baseline)
            replicas = _run_from(tiny.model, records, layer, torch.ones(2 * 3, tiny.n_heads))  # two replicas
            torch.testing.assert_close(_row_nll(tiny.model, replicas, ids.repeat(2, 1), mask.repeat(2, 1)),
                                       baseline.repeat(2), rtol=1e-7, atol=0)


@pytest.fixture(scope="module")
def naive_gpt2(tiny_gpt2, few):
    return np.array([[naive_ppl(tiny_gpt2, few, layer, head) for head in range(tiny_gpt2.n_heads)]
                     for layer in range(tiny_gpt2.n_layers)])


@settings(max_examples=6, deadline=None)
@given(batch_size=st.integers(1, 4), heads_per_pass=st.integers(1, 5))
def test_fast_scan_equals_the_naive_loop(tiny_gpt2, few, naive_gpt2, batch_size, heads_per_pass):
    table = measure_ablation(tiny_gpt2, few, max_tokens=ALL, batch_size=batch_size, heads_per_pass=heads_per_pass,
                             progress=False)["ablation"]
    fast = table.pivot(index="layer", columns="head", values="ppl").to_numpy()
    np.testing.assert_allclose(fast, naive_gpt2, rtol=1e-6)


def test_fast_scan_equals_the_naive_loop_on_every_layout(tiny, few):
    table = measure_ablation(tiny, few, max_tokens=ALL, batch_size=2, heads_per_pass=3, progress=False)["ablation"]
    for row in table.itertuples():
        assert row.ppl == pytest.approx(naive_ppl(tiny, few, row.layer, row.head), rel=1e-6)


def passage_mean_nll(model, ids: list[int], params: dict | None = None) -> torch.Tensor:
    """Mean NLL per scored token of one passage in float64, alone in its batch, ``params`` swapped in."""
    x = torch.tensor([ids])
    logits = torch.func.functional_call(model, params or {}, kwargs={"input_ids": x}).logits[0, :-1]  # [T-1, V]
    return -torch.log_softmax(logits.double(), dim=-1).gather(-1, x[0, 1:, None]).mean()


def test_importance_equals_per_passage_autograd_and_finite_differences(tiny, few):
    """I_h = mean |dL_p/ds| where s scales the output-projection weights reading the head, one passage at a time."""
    layer, head = tiny.n_layers - 1, 1
    table = measure_ablation(tiny, few, max_tokens=ALL, batch_size=2, progress=False)["ablation"].set_index(["layer", "head"])
    encoded = encode(tiny, [p.text for p in few.passages], "prepend")
    model = copy.deepcopy(tiny.model).double()
    weight = output_projection(model, layer).weight
    name = next(n for n, p in model.named_parameters() if p is weight)
    reads_head = torch.zeros_like(weight)
    reads_head[head_slice(tiny, layer, head)] = 1
    slopes = []
    for ids in encoded:
        s = torch.ones((), dtype=torch.float64, requires_grad=True)
        loss = passage_mean_nll(model, ids, {name: weight * (1 + reads_head * (s - 1))})
        slopes.append(torch.autograd.grad(loss, s)[0].item())
    importance = table.loc[(layer, head), "importance"]
    assert importance == pytest.approx(np.mean(np.abs(slopes)), rel=1e-5)
    # central differences, loosely: eager attention takes its softmax in float32 even in a float64 model
    eps = 1e-3
    up, down = (with_head_scaled(tiny, layer, head, 1 + sign * eps, torch.float64).model for sign in (1, -1))
    with torch.no_grad():
        differences = [float(passage_mean_nll(up, ids) - passage_mean_nll(down, ids)) / (2 * eps) for ids in encoded]
    assert importance == pytest.approx(np.mean(np.abs(differences)), rel=2e-3)
    assert (table["importance"] > 0).all()


def test_per_passage_nll_pools_to_the_ablation_table(tiny_gpt2, few):
    tables = measure_ablation(tiny_gpt2, few, max_tokens=ALL, tokens_per_passage=20, batch_size=2, progress=False)
    heads, passages = tables["ablation"], tables["ablation_passages"]
    validate_table("ablation", heads)
    validate_table("ablation_passages", passages)
    per_passage = passages.groupby("passage_id")["n_tokens"].first()
    assert len(per_passage) == len(few.passages) and (per_passage == 20).all()  # each passage's opening only
    sums = passages.groupby(["layer", "head"])[["nll_sum", "n_tokens"]].sum()
    np.testing.assert_allclose(np.exp(sums["nll_sum"] / sums["n_tokens"]), heads.set_index(["layer", "head"])["ppl"],
                               rtol=1e-12)
    base = passages.groupby("passage_id")[["baseline_nll_sum", "n_tokens"]].first().sum()
    assert math.exp(base["baseline_nll_sum"] / base["n_tokens"]) == pytest.approx(heads["baseline_ppl"].iloc[0],
                                                                                 rel=1e-12)


def test_token_budget_cuts_the_last_passage_to_fit(tiny_gpt2, few):
    encoded = encode(tiny_gpt2, [p.text for p in few.passages], "prepend")
    first = len(encoded[0]) - 1
    assert measure_ablation(tiny_gpt2, few, max_tokens=first + 5, progress=False)["ablation"]["n_tokens"].iloc[0] == first + 5
    cut = measure_ablation(tiny_gpt2, few, max_tokens=first - 10, progress=False)["ablation"]
    only_first = Corpus("first", few.passages[:1])
    whole_first = measure_ablation(tiny_gpt2, only_first, max_tokens=ALL, progress=False)["ablation"]
    assert cut["n_tokens"].iloc[0] == first - 10
    assert cut["baseline_ppl"].iloc[0] != whole_first["baseline_ppl"].iloc[0]  # the passage was cut short
    assert whole_first["n_tokens"].iloc[0] == first


@pytest.mark.parametrize("bad", [{"max_tokens": 0}, {"batch_size": 0}, {"heads_per_pass": 0}])
def test_settings_must_be_positive(tiny_gpt2, few, bad):
    with pytest.raises(ValueError, match="at least 1"):
        measure_ablation(tiny_gpt2, few, progress=False, **bad)["ablation"]


def test_the_model_is_left_as_found(tiny, few):
    before = model_checksum(tiny.model)
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            measure_ablation(tiny, few, max_tokens=64, progress=False)["ablation"]
            assert torch.is_grad_enabled() == grad_mode
    assert model_checksum(tiny.model) == before and not tiny.model.training
    assert all(p.grad is None and p.requires_grad for p in tiny.model.parameters())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in tiny.model.modules())


def test_run_instrument_stores_valid_tables(tiny, few, store):
    result = run_instrument(store, tiny, few, "ablation", progress=False, bootstrap_resamples=100, max_tokens=128)
    heads, layers = result.tables["ablation"], result.tables["ablation_layers"]
    assert result.run.status == "complete" and heads["n_tokens"].iloc[0] == 128
    assert list(layers["layer"]) == list(range(tiny.n_layers)) and (layers["n_heads"] == tiny.n_heads).all()
    np.testing.assert_allclose(layers["mean_delta_ppl"], heads.groupby("layer")["delta_ppl"].mean())
    assert (layers["ci_low"] <= layers["mean_delta_ppl"]).all()
    assert (layers["mean_delta_ppl"] <= layers["ci_high"]).all()


def test_layer_summary_has_no_interval_for_a_single_head():
    heads = pd.DataFrame({"layer": [0, 0, 0, 1], "head": [0, 1, 2, 0], "ppl": [11.0, 12.0, 16.0, 10.5],
                          "delta_ppl": [1.0, 2.0, 6.0, 0.5], "baseline_ppl": 10.0,
                          "importance": [0.1, 0.2, 0.3, 0.4], "n_tokens": 100})
    validate_table("ablation", heads)
    layers = layer_ablation(heads, n_resamples=200).set_index("layer")
    validate_table("ablation_layers", layers.reset_index())
    assert layers.loc[0, "mean_delta_ppl"] == pytest.approx(3.0)
    assert layers.loc[0, "mean_importance"] == pytest.approx(0.2)
    assert 1.0 <= layers.loc[0, "ci_low"] < 3.0 < layers.loc[0, "ci_high"] <= 6.0
    assert math.isnan(layers.loc[1, "ci_low"]) and layers.loc[1, "n_heads"] == 1


@pytest.mark.slow
def test_smollm2_ablation_equals_a_copy_with_the_head_weights_zeroed(smollm2, starter):
    table = measure_ablation(smollm2, starter, max_tokens=16, progress=False)["ablation"]
    validate_table("ablation", table)
    assert len(table) == 30 * 9 and (table["n_tokens"] == 16).all()
    ids = encode(smollm2, [starter.passages[0].text], "prepend")[0]
    assert len(ids) > 17  # the first passage alone fills the budget, cut to 16 scored tokens
    ids = torch.tensor([ids[:17]])
    by_head = table.set_index(["layer", "head"])
    for layer, head in [(0, 0), (29, 8)]:
        zeroed = with_head_scaled(smollm2, layer, head, 0.0).model
        with torch.no_grad():
            nll = torch.nn.functional.cross_entropy(zeroed(input_ids=ids).logits[0, :-1], ids[0, 1:])
        assert by_head.loc[(layer, head), "ppl"] == pytest.approx(math.exp(nll.item()), rel=1e-5)
