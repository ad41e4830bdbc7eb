import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import SchemaViolation, validate_table
from atlas._scoring import batches, encode, token_budget
from atlas.instruments import domain_perplexity, measure_perplexity


@pytest.fixture(scope="module")
def small(starter):
    return starter.sample(2)


def test_table_matches_schema_on_every_layout(tiny, small):
    table = measure_perplexity(tiny, small, progress=False)["perplexity"]
    validate_table("perplexity", table)
    validate_table("perplexity_domains", domain_perplexity(table, n_resamples=200))
    assert list(table["passage_id"]) == [p.id for p in small.passages]


@settings(max_examples=8, deadline=None)
@given(batch_size=st.integers(1, 16))
def test_batching_does_not_change_any_number(tiny_gpt2, starter, batch_size):
    corpus = starter.sample(2)
    reference = measure_perplexity(tiny_gpt2, corpus, batch_size=1, progress=False)["perplexity"]
    batched = measure_perplexity(tiny_gpt2, corpus, batch_size=batch_size, progress=False)["perplexity"]
    assert (batched["n_tokens"] == reference["n_tokens"]).all()
    pd.testing.assert_series_equal(batched["nll_sum"], reference["nll_sum"], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(2, 60), min_size=1, max_size=20), batch_size=st.integers(1, 6),
       max_padding=st.sampled_from([0.0, 0.1, 0.3, 1.0]))
def test_batches_hold_every_passage_once_within_size_and_padding(lengths, batch_size, max_padding):
    encoded = [[7 + i] * n for i, n in enumerate(lengths)]
    seen, count = [], 0
    for idx, ids, mask in batches(encoded, batch_size, 0, "cpu", max_padding):
        count += 1
        assert 1 <= len(idx) <= batch_size and ids.shape == (len(idx), max(lengths[i] for i in idx))
        assert len(idx) == 1 or 1 - float(mask.float().mean()) <= max_padding
        for row, i in enumerate(idx):
            assert ids[row, mask[row].bool()].tolist() == encoded[i] and int(mask[row].sum()) == lengths[i]
        seen += idx
    assert sorted(seen) == list(range(len(lengths)))
    if max_padding == 1.0:  # the default: the batch size alone decides
        assert count == math.ceil(len(lengths) / batch_size)


def test_bos_policy_none_matches_hf_labels_loss(tiny, small):
    """Under 'none' the first token is unscored: exactly what model(labels=ids) averages over."""
    table = measure_perplexity(tiny, small, bos_policy="none", progress=False)["perplexity"]
    for passage, row in zip(small.passages, table.itertuples()):
        ids = torch.tensor([tiny.tokenizer(passage.text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            loss = tiny.model(input_ids=ids, labels=ids).loss.item()
        assert row.n_tokens == ids.shape[1] - 1
        assert row.nll_sum / row.n_tokens == pytest.approx(loss, rel=1e-5)


def test_bos_policy_none_leaves_the_unscored_first_tokens_bytes_out_of_bits_per_byte(tiny_gpt2, small):
    """The byte tokenizer's first token is the text's first byte (an ASCII letter here): one byte less."""
    none = measure_perplexity(tiny_gpt2, small, bos_policy="none", progress=False)["perplexity"]
    prepend = measure_perplexity(tiny_gpt2, small, bos_policy="prepend", progress=False)["perplexity"]
    assert (prepend["n_bytes"] == [len(p.text.encode()) for p in small.passages]).all()
    assert (none["n_bytes"] == prepend["n_bytes"] - 1).all()
    assert none["bits_per_byte"].tolist() == pytest.approx((none["nll_sum"] / (math.log(2) * none["n_bytes"])).tolist())


def test_bos_policy_prepend_scores_every_text_token_after_the_document_start(tiny_gpt2, small):
    table = measure_perplexity(tiny_gpt2, small, bos_policy="prepend", progress=False)["perplexity"]
    passage = small.passages[0]
    ids = tiny_gpt2.tokenizer(passage.text, add_special_tokens=False).input_ids
    full = torch.tensor([[tiny_gpt2.doc_start_id] + ids])
    with torch.no_grad():
        loss = tiny_gpt2.model(input_ids=full, labels=full).loss.item()
    assert table.loc[0, "n_tokens"] == len(ids)
    assert table.loc[0, "nll_sum"] == pytest.approx(loss * len(ids), rel=1e-5)
    assert table.loc[0, "bits_per_byte"] == pytest.approx(
        table.loc[0, "nll_sum"] / (math.log(2) * len(passage.text.encode())))


def test_unknown_bos_policy(tiny_gpt2, small):
    with pytest.raises(ValueError, match="unknown bos_policy 'first': use prepend or none"):
        measure_perplexity(tiny_gpt2, small, bos_policy="first", progress=False)["perplexity"]


def test_domain_perplexity_is_token_weighted_with_a_ci_around_it():
    table = pd.DataFrame({"passage_id": ["a", "b", "c"], "domain": ["d", "d", "e"], "n_tokens": [10, 30, 5],
                          "n_bytes": [40, 100, 20], "nll_sum": [20.0, 30.0, 5.0], "ppl": [0, 0, 0],
                          "bits_per_byte": [0, 0, 0]})
    domains = domain_perplexity(table, n_resamples=500).set_index("domain")
    assert domains.loc["d", "ppl"] == pytest.approx(math.exp(50 / 40))
    assert domains.loc["d", "ci_low"] <= domains.loc["d", "ppl"] <= domains.loc["d", "ci_high"]
    assert math.isnan(domains.loc["e", "ci_low"])  # a single passage has no interval
    assert domains.loc["d", "bits_per_byte"] == pytest.approx(50 / (math.log(2) * 140))


@pytest.mark.parametrize("corrupt, expectation", [
    (lambda t: t.assign(ppl=0.5), "expect_column_values_to_be_between"),
    (lambda t: t.assign(passage_id="same"), "expect_column_values_to_be_unique"),
    (lambda t: t.assign(n_tokens=t["n_tokens"].astype(float)), "expect_column_values_to_be_in_type_list"),
    (lambda t: t.assign(nll_sum=None), "expect_column_values_to_not_be_null"),
    (lambda t: t.drop(columns="n_bytes"), "columns missing ['n_bytes']"),
])
def test_schema_rejects_malformed_tables_with_the_offending_rows(tiny_gpt2, small, corrupt, expectation):
    table = measure_perplexity(tiny_gpt2, small, progress=False)["perplexity"]
    with pytest.raises(SchemaViolation) as info:
        validate_table("perplexity", corrupt(table))
    assert expectation in str(info.value) and "it was not stored" in str(info.value)


def test_schema_rejects_a_ci_that_does_not_contain_the_estimate(tiny_gpt2, small):
    domains = domain_perplexity(measure_perplexity(tiny_gpt2, small, progress=False)["perplexity"], n_resamples=100)
    domains.loc[1, "ci_low"] = domains.loc[1, "ppl"] * 2
    with pytest.raises(SchemaViolation) as info:
        validate_table("perplexity_domains", domains)
    assert domains.loc[1, "domain"] in str(info.value)


@settings(max_examples=20, deadline=None)
@given(budget=st.integers(1, 3000))
def test_token_budget_takes_domains_in_turn_and_spends_exactly_the_budget(tiny_gpt2, starter, budget):
    encoded = token_budget(tiny_gpt2, starter, budget)
    assert sum(len(ids) - 1 for ids in encoded) == budget
    order = starter.round_robin()
    assert [p.domain for p in order[:8]] == starter.domains  # every domain before any second passage
    whole = encode(tiny_gpt2, [p.text for p in order[:len(encoded)]], "prepend")
    assert encoded[:-1] == whole[:-1] and whole[-1][:len(encoded[-1])] == encoded[-1]
