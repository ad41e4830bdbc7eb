import inspect
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from atlas import (INSTRUMENTS, Corpus, Passage, SchemaViolation, load_corpus, load_model, run_instrument,
                   validate_table)
from atlas._anatomy import hook_count, kv_groups
from atlas._cisp import model_checksum
from atlas._scoring import encode
from atlas.instruments.coupling import (head_pair_matrix, layer_coupling, measure_coupling, row_pair_matrix,
                                       shared_kv_pairs)

FAMILIES = ("row_centred", "seed_flattened")
MHA_VARIANTS = {f + s for f in FAMILIES for s in ("", "_no_sink")}
GQA_VARIANTS = {v + "_cross_kv" for v in MHA_VARIANTS}


@pytest.fixture(scope="module")
def small(starter):
    return starter.sample(1)


def causal_maps(seed: int, heads: int, t: int, sink_heads: int = 0) -> torch.Tensor:
    """Random causal attention maps [heads, t, t]; the first ``sink_heads`` put all weight on key 0."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(heads, t, t, generator=g) * 3
    logits[:sink_heads] = -torch.inf
    logits[:sink_heads, :, 0] = 0.0
    logits = logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -torch.inf)
    return logits.softmax(-1)


def reference_coupling(maps: np.ndarray, sink: bool, pairs) -> float:
    """numpy.corrcoef over the lower triangle, averaged over the given head pairs."""
    t = maps.shape[-1]
    rows, cols = np.tril_indices(t)
    keep = cols >= (0 if sink else 1)
    corr = np.corrcoef(maps[:, rows[keep], cols[keep]])
    return float(np.mean([corr[h, k] for h, k in pairs]))


def test_tables_match_schema_on_every_layout(tiny, small, store):
    result = run_instrument(store, tiny, small, "coupling", progress=False, bootstrap_resamples=100)
    passages, summary = result.tables["coupling_passages"], result.tables["coupling"]
    validate_table("coupling_passages", passages)
    validate_table("coupling", summary)
    gqa = kv_groups(tiny.model) > 1
    assert gqa == (tiny.name == "tiny-llama")
    expected = MHA_VARIANTS | (GQA_VARIANTS if gqa else set())
    assert set(passages["variant"]) == set(summary["variant"]) == expected
    assert len(passages) == len(small.passages) * tiny.n_layers * len(expected)
    assert (summary["n_passages"] == len(small.passages)).all()
    assert sorted(set(summary["layer"])) == list(range(tiny.n_layers))
    # 4 heads: 6 pairs; tiny-llama's 2 KV heads of 2 query heads each leave 4 pairs across KV heads
    assert set(passages.loc[passages["variant"].isin(MHA_VARIANTS), "n_pairs"]) == {6}
    assert set(passages.loc[passages["variant"].isin(GQA_VARIANTS), "n_pairs"]) <= {4}
    assert passages["n_tokens"].max() <= 128


def test_registry_defaults_equal_the_function_defaults():
    inst = INSTRUMENTS["coupling"]
    params = inspect.signature(measure_coupling).parameters
    assert inst.defaults == {k: params[k].default for k in inst.defaults}
    assert inst.table == "coupling_passages" and set(inst.summaries) == {"coupling"} and inst.terms == ("coupling",)


@settings(max_examples=6, deadline=None)
@given(batch_size=st.integers(1, 16), max_tokens=st.sampled_from([16, 100, 300]))
def test_batching_does_not_change_any_number(tiny, starter, batch_size, max_tokens):
    corpus = starter.sample(1)
    reference = measure_coupling(tiny, corpus, batch_size=1, max_tokens=max_tokens, progress=False)["coupling_passages"]
    batched = measure_coupling(tiny, corpus, batch_size=batch_size, max_tokens=max_tokens, progress=False)["coupling_passages"]
    pd.testing.assert_frame_equal(batched.drop(columns="coupling"), reference.drop(columns="coupling"))
    np.testing.assert_allclose(batched["coupling"], reference["coupling"], rtol=0, atol=1e-9)


def test_passages_are_truncated_to_max_tokens(tiny_gpt2, small):
    table = measure_coupling(tiny_gpt2, small, max_tokens=300, progress=False)["coupling_passages"]
    full = [len(ids) for ids in encode(tiny_gpt2, [p.text for p in small.passages], "prepend")]
    assert max(full) > 300 > min(full)  # the starter passages straddle the limit
    got = table.groupby("passage_id", sort=False)["n_tokens"].first().tolist()
    assert got == [min(n, 300) for n in full]


def test_matches_numpy_corrcoef_on_output_attentions():
    """Independent reference: the attention maps transformers returns, correlated by numpy."""
    lm = load_model("tiny-llama", device="cpu")  # a fresh model: output_attentions leaves hooks on it
    corpus = Corpus("two", (Passage("a", "x", "Tides turn twice a day along this coast."),
                            Passage("b", "y", "Le vent se leve.")))
    table = measure_coupling(lm, corpus, batch_size=2, progress=False)["coupling_passages"].set_index(["passage_id", "layer", "variant"])
    groups = kv_groups(lm.model)
    all_pairs = [(h, k) for h in range(4) for k in range(h + 1, 4)]
    cross = [(h, k) for h, k in all_pairs if h // groups != k // groups]
    for passage, ids in zip(corpus.passages, encode(lm, [p.text for p in corpus.passages], "prepend")):
        with torch.no_grad():
            attentions = lm.model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
        for layer, maps in enumerate(attentions):
            maps = maps[0].double().numpy()
            for variant, sink, pairs in [("seed_flattened", True, all_pairs), ("seed_flattened_no_sink", False, all_pairs),
                                         ("seed_flattened_cross_kv", True, cross),
                                         ("seed_flattened_no_sink_cross_kv", False, cross)]:
                assert table.loc[(passage.id, layer, variant), "coupling"] == pytest.approx(
                    reference_coupling(maps, sink, pairs), abs=1e-6)
                assert table.loc[(passage.id, layer, variant), "n_pairs"] == len(pairs)


def test_the_sink_variant_differs_from_all(tiny, small):
    table = measure_coupling(tiny, small, progress=False)["coupling_passages"]
    wide = table.pivot_table(index=["passage_id", "layer"], columns="variant", values="coupling")
    for family in FAMILIES:
        assert (wide[family] - wide[family + "_no_sink"]).abs().min() > 1e-6


def test_model_left_as_found_attention_implementation_included():
    lm = load_model("tiny-gpt2", device="cpu")
    lm.model.set_attn_implementation("sdpa")
    before, hooks = model_checksum(lm.model), hook_count(lm.model)
    measure_coupling(lm, load_corpus("starter").sample(1), max_tokens=32, progress=False)["coupling_passages"]
    assert lm.model.config._attn_implementation == "sdpa"
    assert model_checksum(lm.model) == before and hook_count(lm.model) == hooks
    assert not lm.model.training and torch.is_grad_enabled()


def test_cells_without_a_defined_pair_are_left_out_with_a_warning(tiny_gpt2, small):
    """Two tokens: without the sink each head's map is one number, so no correlation is defined; and no row has
    the 3 keys the row-centred family needs."""
    with pytest.warns(RuntimeWarning, match="no head pair with a defined correlation"):
        table = measure_coupling(tiny_gpt2, small, max_tokens=2, progress=False)["coupling_passages"]
    assert set(table["variant"]) == {"seed_flattened"} and (table["n_tokens"] == 2).all()
    assert table["coupling"].notna().all()


# --- a probe of heads, not of the causal mask ---------------------------------------------------

def row_twin(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Each row's weights shuffled among its own keys: the same row profile, nothing else in common."""
    g, twin = torch.Generator().manual_seed(seed), maps.clone()
    for i in range(maps.shape[-1]):
        twin[..., i, : i + 1] = maps[..., i, torch.randperm(i + 1, generator=g)]
    return twin


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_independent_random_heads_couple_at_zero_under_the_default_and_not_under_the_seeds(scale):
    """300 pairs of independent random causal maps (softmax of N(0, scale^2) logits), T = 64."""
    g = torch.Generator().manual_seed(7)
    rows, flat = [], []
    for _ in range(300):
        logits = torch.randn(2, 64, 64, generator=g) * scale
        maps = logits.masked_fill(~torch.ones(64, 64, dtype=torch.bool).tril(), -torch.inf).softmax(-1)
        rows.append(float(row_pair_matrix(maps)[0, 1]))
        flat.append(float(head_pair_matrix(maps)[0, 1]))
    assert abs(np.mean(rows)) <= 0.01  # expected value 0: the rows are exchangeable and independent
    assert np.mean(flat) > 0.05  # the seed's probe couples them through the shared 1/(i+1) row profile


def test_a_copy_couples_at_one_and_a_row_permuted_twin_at_zero():
    twins = []
    for seed in range(100):
        head = causal_maps(seed, 1, 48)[0]
        corr = row_pair_matrix(torch.stack([head, head, row_twin(head, seed)]))
        assert corr[0, 1] == pytest.approx(1.0, abs=1e-12)
        twins.append(float(corr[0, 2]))
    assert abs(np.mean(twins)) <= 0.02


def test_random_weights_couple_at_zero_under_the_default(starter):
    """Tiny models at initialisation compute nothing: the seed's probe gives about 1 there, the default about 0."""
    table = pd.concat([measure_coupling(load_model(name, device="cpu"), starter.sample(2), progress=False)
                       ["coupling_passages"] for name in ("tiny-gpt2", "tiny-opt", "tiny-llama")])
    by_variant = table.groupby("variant")["coupling"].mean()
    assert abs(by_variant["row_centred"]) <= 0.05 and abs(by_variant["row_centred_no_sink"]) <= 0.05
    assert by_variant["seed_flattened"] > 0.9


def test_row_pair_matrix_by_hand():
    """Row 2 alone has 3 keys; the heads' centred rows are (-2, -1, 3)/30 and (2, 0, -2)/10 -> r = -10 / sqrt(14 * 8)."""
    maps = torch.tensor([
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.8 / 3, 0.9 / 3, 1.3 / 3]],
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [1 / 3 + 0.2, 1 / 3, 1 / 3 - 0.2]],
    ])
    expected = float(np.corrcoef(maps[0, 2].numpy(), maps[1, 2].numpy())[0, 1])
    assert expected == pytest.approx(-10 / math.sqrt(14 * 8), abs=1e-6)
    assert row_pair_matrix(maps)[0, 1] == pytest.approx(expected, abs=1e-6)
    assert row_pair_matrix(maps, sink=False).isnan().all()  # without the sink no row has 3 keys


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), heads=st.integers(1, 5), t=st.integers(3, 12), sink=st.booleans())
def test_row_pair_matrix_is_a_correlation_matrix(seed, heads, t, sink):
    corr = row_pair_matrix(causal_maps(seed, heads, t), sink=sink)
    defined = corr.nan_to_num()
    assert corr.shape == (heads, heads) and corr.dtype == torch.float64
    torch.testing.assert_close(defined, defined.T, rtol=0, atol=1e-12)  # symmetric up to rounding
    assert (defined.abs() <= 1).all()


# --- the pair matrix ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), heads=st.integers(1, 6), t=st.integers(2, 12), sink=st.booleans(),
       sink_heads=st.integers(0, 2))
def test_pair_matrix_is_a_correlation_matrix(seed, heads, t, sink, sink_heads):
    sink_heads = min(sink_heads, heads)
    corr = head_pair_matrix(causal_maps(seed, heads, t, sink_heads), sink=sink)
    assert corr.shape == (heads, heads) and corr.dtype == torch.float64
    # undefined exactly for heads constant over the flattened entries: sink heads without the sink,
    # and every head when one entry is left (two tokens without the sink)
    constant = torch.zeros(heads, dtype=torch.bool)
    if not sink:
        constant[:sink_heads] = True
        if t == 2:
            constant[:] = True
    undefined = constant[:, None] | constant[None, :]
    assert torch.equal(corr.isnan(), undefined)
    # Exact by construction: the NaN pattern (an exact max == min test), the range (clamped) and the diagonal
    # (filled with 1.0). Symmetry is not: BLAS may sum x_i . x_j and x_j . x_i in different orders, so the
    # two triangles agree to rounding (a few ulps of float64), not bit for bit.
    defined = corr.nan_to_num()
    torch.testing.assert_close(defined, defined.T, rtol=0, atol=1e-12)
    assert (defined.abs() <= 1).all()
    assert torch.equal(corr.diagonal()[~constant], torch.ones(int((~constant).sum()), dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.integers(3, 10), sink=st.booleans())
def test_pair_matrix_batches_over_leading_dimensions(seed, t, sink):
    maps = torch.stack([causal_maps(seed + k, 3, t) for k in range(4)])  # [4, 3, t, t]
    batched = head_pair_matrix(maps, sink=sink)
    for k in range(4):
        torch.testing.assert_close(batched[k], head_pair_matrix(maps[k], sink=sink))


def test_pair_matrix_by_hand_agrees_with_numpy_and_scipy():
    maps = torch.tensor([
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]],
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.6, 0.3, 0.1]],
        [[1.0, 0.0, 0.0], [0.1, 0.9, 0.0], [0.1, 0.1, 0.8]],
    ])
    lower = [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    for sink, cells in ((True, lower), (False, [c for c in lower if c[1] > 0])):
        x = np.array([[m[i][j] for i, j in cells] for m in maps.tolist()])
        corr = head_pair_matrix(maps, sink=sink).numpy()
        np.testing.assert_allclose(corr, np.corrcoef(x), atol=1e-7)
        assert corr[0, 2] == pytest.approx(stats.pearsonr(x[0], x[2]).statistic, abs=1e-7)
    # without the sink, heads 0 and 2 read (0.5, 0.3, 0.5) and (0.9, 0.1, 0.8): deviations from the means
    # (1, -2, 1) / 15 and (0.3, -0.5, 0.2), so r = 0.1 / sqrt(6/225 * 0.38) = 0.9934
    assert head_pair_matrix(maps, sink=False)[0, 2] == pytest.approx(0.1 / math.sqrt(6 / 225 * 0.38), abs=1e-7)


def test_shared_kv_pairs_follow_h_floor_div_groups():
    shared = shared_kv_pairs(9, 3)  # smollm2: 9 query heads, 3 KV heads
    assert shared.sum() == 27 and torch.equal(shared, shared.T)
    assert shared[0, 2] and not shared[2, 3] and shared[8, 6]
    assert (~shared).triu(1).sum() == 27  # cross-KV pairs averaged by the *_cross_kv variants


# --- the summary ---------------------------------------------------------------------------

def test_layer_coupling_is_the_passage_mean_with_a_ci_around_it():
    table = pd.DataFrame({"passage_id": ["a", "b", "c", "a"], "domain": ["d"] * 4, "layer": [0, 0, 0, 1],
                          "variant": ["row_centred"] * 4, "coupling": [0.2, 0.4, 0.9, 0.5], "n_pairs": [6] * 4,
                          "n_tokens": [10] * 4})
    summary = layer_coupling(table, n_resamples=500)
    validate_table("coupling", summary)
    row0, row1 = summary.iloc[0], summary.iloc[1]
    assert (row0["layer"], row0["n_passages"]) == (0, 3) and row0["coupling"] == pytest.approx(0.5)
    assert 0.2 <= row0["ci_low"] < 0.5 < row0["ci_high"] <= 0.9
    assert math.isnan(row1["ci_low"]) and math.isnan(row1["ci_high"]) and row1["coupling"] == 0.5


@pytest.mark.parametrize("table, corrupt", [
    ("coupling_passages", lambda t: t.assign(coupling=1.5)),
    ("coupling_passages", lambda t: t.assign(variant="some")),
    ("coupling_passages", lambda t: t.assign(coupling=float("nan"))),
    ("coupling", lambda t: t.assign(ci_low=t["coupling"] + 0.01)),
])
def test_schema_rejects_malformed_tables(tiny_gpt2, small, table, corrupt):
    passages = measure_coupling(tiny_gpt2, small, max_tokens=32, progress=False)["coupling_passages"]
    df = passages if table == "coupling_passages" else layer_coupling(passages, n_resamples=100)
    validate_table(table, df)
    with pytest.raises(SchemaViolation):
        validate_table(table, corrupt(df))


@pytest.mark.slow
def test_smollm2_coupling_on_real_text(smollm2, shared_corpus, store):
    result = run_instrument(store, smollm2, shared_corpus.sample(2), "coupling", progress=False,
                            max_tokens=48, bootstrap_resamples=200)
    passages, summary = result.tables["coupling_passages"], result.tables["coupling"]
    assert sorted(set(summary["layer"])) == list(range(30))
    assert set(summary["variant"]) == MHA_VARIANTS | GQA_VARIANTS
    assert passages["coupling"].between(-1, 1).all() and summary["coupling"].between(-1, 1).all()
    assert (summary["n_passages"] == 16).all()
    # 9 heads: 36 pairs; 3 KV heads of 3 query heads each leave 27 pairs across KV heads
    assert set(passages.loc[passages["variant"] == "seed_flattened", "n_pairs"]) == {36}
    assert set(passages.loc[passages["variant"] == "seed_flattened_cross_kv", "n_pairs"]) == {27}
    assert smollm2.model.config._attn_implementation == "sdpa"
