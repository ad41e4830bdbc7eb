import copy
import math

import pandas as pd
import pytest
import torch
from _corpora import first_domains
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import Corpus, run_instrument, validate_table
from atlas._anatomy import decoder_layers
from atlas.instruments import domain_perplexity, measure_gradient, measure_perplexity


@pytest.fixture(scope="module")
def small(starter):
    return first_domains(starter, 3, 3)


def _used(corpus: Corpus, table: pd.DataFrame) -> Corpus:
    """The passages the instrument used: the first n_passages of each domain."""
    keep = dict(zip(table["domain"], table["n_passages"]))
    return Corpus("used", tuple(p for d in keep for p in [q for q in corpus.passages if q.domain == d][: keep[d]]))


def _reference(lm, passages) -> tuple[float, float, list[float], float, float]:
    """Loss, gradient norm, per-layer norms, entropy and top probability, one passage at a time with
    ``model(labels=...)`` and ``.backward()`` on a copy of the model (HF averages over every token after the first)."""
    model = copy.deepcopy(lm.model)
    encoded = [[lm.doc_start_id] + lm.tokenizer(p.text, add_special_tokens=False).input_ids for p in passages]
    n_tokens = sum(len(ids) - 1 for ids in encoded)
    loss = entropy = top = 0.0
    for ids in encoded:
        ids = torch.tensor([ids])
        out = model(input_ids=ids, labels=ids)
        (out.loss * (ids.shape[1] - 1) / n_tokens).backward()
        loss += out.loss.item() * (ids.shape[1] - 1) / n_tokens
        dist = torch.distributions.Categorical(logits=out.logits[0, :-1].detach())
        entropy += dist.entropy().sum().item() / n_tokens
        top += dist.probs.max(-1).values.sum().item() / n_tokens
    total = math.sqrt(sum(p.grad.double().square().sum().item() for p in model.parameters()))
    layers = [math.sqrt(sum(p.grad.double().square().sum().item() for p in block.parameters()))
              for block in decoder_layers(model)]
    return loss, total, layers, entropy, top


def test_tables_match_schema_on_every_layout(tiny, small):
    tables = measure_gradient(tiny, small, max_tokens_per_domain=700, progress=False)
    validate_table("gradient", tables["gradient"])
    validate_table("gradient_layers", tables["gradient_layers"])
    assert list(tables["gradient"]["domain"]) == small.domains
    assert len(tables["gradient_layers"]) == len(small.domains) * len(decoder_layers(tiny.model))


def test_numbers_match_an_independent_backward_on_every_layout(tiny, small):
    tables = measure_gradient(tiny, small, max_tokens_per_domain=700, progress=False)
    layers = tables["gradient_layers"]
    for row in tables["gradient"].head(3).itertuples():
        passages = [p for p in small.passages if p.domain == row.domain][: row.n_passages]
        loss, total, per_layer, entropy, top = _reference(tiny, passages)
        assert row.loss == pytest.approx(loss, rel=1e-5)
        assert row.grad_norm == pytest.approx(total, rel=1e-5)
        assert list(layers[layers["domain"] == row.domain]["grad_norm"]) == pytest.approx(per_layer, rel=1e-5)
        assert row.entropy == pytest.approx(entropy, rel=1e-5)
        assert row.max_prob == pytest.approx(top, rel=1e-5)


def test_loss_is_the_log_of_the_pooled_domain_perplexity(tiny_gpt2, small):
    table = measure_gradient(tiny_gpt2, small, max_tokens_per_domain=700, progress=False)["gradient"]
    used = _used(small, table)
    domains = domain_perplexity(measure_perplexity(tiny_gpt2, used, progress=False)["perplexity"], n_resamples=100)
    merged = table.merge(domains, on="domain", suffixes=("", "_ppl"))
    assert len(merged) == len(table)
    assert (merged["n_tokens"] == merged["n_tokens_ppl"]).all() and (merged["n_passages"] == merged["n"]).all()
    assert list(merged["loss"]) == pytest.approx(list(merged["ppl"].map(math.log)), rel=1e-6)


def test_token_budget_takes_whole_leading_passages(tiny_gpt2, small):
    one = measure_gradient(tiny_gpt2, small, max_tokens_per_domain=1, progress=False)["gradient"]
    every = measure_gradient(tiny_gpt2, small, max_tokens_per_domain=10**6, progress=False)["gradient"]
    some = measure_gradient(tiny_gpt2, small, max_tokens_per_domain=700, progress=False)["gradient"]
    assert (one["n_passages"] == 1).all()  # at least one passage, even over budget
    assert (every["n_passages"] == 3).all()
    assert ((some["n_tokens"] <= 700) | (some["n_passages"] == 1)).all()
    assert (some["n_passages"] < every["n_passages"]).any() and (some["n_passages"] > 1).any()


def test_layer_norms_are_part_of_the_total_and_outputs_are_distributions(tiny, small):
    tables = measure_gradient(tiny, small, progress=False)
    layers = tables["gradient_layers"].groupby("domain")["grad_norm"].apply(lambda g: math.sqrt((g ** 2).sum()))
    table = tables["gradient"].set_index("domain")
    assert (layers.reindex(table.index) <= table["grad_norm"]).all()
    assert (table["grad_norm"] > 0).all()
    assert ((table["entropy"] >= 0) & (table["entropy"] <= math.log(tiny.model.config.vocab_size))).all()
    assert ((table["max_prob"] > 0) & (table["max_prob"] <= 1)).all()


@pytest.fixture(scope="module")
def unbatched(tiny_gpt2, starter):
    corpus = first_domains(starter, 2, 5)
    return corpus, measure_gradient(tiny_gpt2, corpus, max_tokens_per_domain=2000, batch_size=1, progress=False)


@settings(max_examples=5, deadline=None)
@given(batch_size=st.integers(2, 5))
def test_batching_does_not_change_any_number(tiny_gpt2, unbatched, batch_size):
    corpus, reference = unbatched
    batched = measure_gradient(tiny_gpt2, corpus, max_tokens_per_domain=2000, batch_size=batch_size, progress=False)
    for name in ("gradient", "gradient_layers"):
        pd.testing.assert_frame_equal(batched[name], reference[name], rtol=1e-5)


def test_model_is_left_as_found(tiny_gpt2, small):
    model = tiny_gpt2.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    baseline = measure_gradient(tiny_gpt2, small, progress=False)["gradient"]
    frozen = decoder_layers(model)[0].mlp.c_fc.weight
    frozen.requires_grad_(False)
    try:
        with torch.no_grad():
            table = measure_gradient(tiny_gpt2, small, progress=False)["gradient"]
            assert not torch.is_grad_enabled()
        assert not frozen.requires_grad
        assert all(p.requires_grad for p in model.parameters() if p is not frozen)
    finally:
        frozen.requires_grad_(True)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    pd.testing.assert_frame_equal(table, baseline)  # a frozen parameter still counts in the gradient


def test_run_instrument_validates_and_stores_both_tables(store, tiny_gpt2, small):
    result = run_instrument(store, tiny_gpt2, small, "gradient", progress=False, bootstrap_resamples=100)
    assert set(result.tables) == {"gradient", "gradient_layers"} and not result.reused
    assert set(store.tables(result.run.id)) == {"gradient", "gradient_layers"}
    assert result.run.status == "complete"


@pytest.mark.slow
def test_smollm2_matches_an_independent_backward(smollm2, shared_corpus):
    corpus = first_domains(shared_corpus, 1, 1)
    tables = measure_gradient(smollm2, corpus, progress=False)
    validate_table("gradient", tables["gradient"])
    assert len(tables["gradient_layers"]) == 30
    row = tables["gradient"].iloc[0]
    loss, total, per_layer, entropy, top = _reference(smollm2, corpus.passages)
    assert row["loss"] == pytest.approx(loss, rel=1e-5)
    assert row["grad_norm"] == pytest.approx(total, rel=1e-4)
    assert list(tables["gradient_layers"]["grad_norm"]) == pytest.approx(per_layer, rel=1e-4)
    assert row["entropy"] == pytest.approx(entropy, rel=1e-4)
    assert row["max_prob"] == pytest.approx(top, rel=1e-4)
