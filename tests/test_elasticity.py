import copy
import dataclasses
import random

import numpy as np
import pandas as pd
import pytest
import torch
from _corpora import first_domains

from atlas import Corpus, Passage, run_instrument, validate_table
from atlas._scoring import batches, encode, token_nll
from atlas.instruments import domain_elasticity, measure_elasticity
from atlas.instruments._descent import Probe, start_point


@pytest.fixture(scope="module")
def small(starter):
    return first_domains(starter, 3, 3)


@pytest.fixture(scope="module")
def built_to_forget(tiny_gpt2, starter):
    """A tiny GPT-2 trained briefly on literary prose, and a corpus of that prose and of digit strings: tuning on
    digits overwrites what the prose taught."""
    prose = [p for p in starter.passages if p.domain == "literary_prose"]
    rng = random.Random(0)
    digits = [Passage(f"digits-{i}", "digits", " ".join("".join(rng.choice("0123456789") for _ in range(5))
                                                         for _ in range(30))) for i in range(4)]
    model = copy.deepcopy(tiny_gpt2.model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    encoded = [ids[:97] for ids in encode(tiny_gpt2, [p.text for p in prose[4:]], "prepend")]
    torch.manual_seed(0)
    for _ in range(15):
        for _, ids, mask in batches(encoded, 8, tiny_gpt2.doc_start_id, "cpu"):
            loss = token_nll(model, ids, mask).sum() / mask[:, 1:].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    lm = dataclasses.replace(tiny_gpt2, model=model.eval(), checksum="")
    return lm, Corpus("forget", tuple(digits + prose[:4]))


def test_the_ewc_anchor_reduces_forgetting_on_a_model_built_to_forget(built_to_forget):
    lm, corpus = built_to_forget
    settings = dict(tune_domains="digits", fisher_passages=2, steps=5, lr=0.3, max_tokens=128, progress=False)
    plain = measure_elasticity(lm, corpus, ewc_lambda=0.0, **settings)
    anchored = measure_elasticity(lm, corpus, ewc_lambda=1e3, **settings)
    for name, table in anchored.items():
        validate_table(name, table)
    zero = domain_elasticity(plain["elasticity"], n_resamples=100).iloc[0]
    share = domain_elasticity(anchored["elasticity"], n_resamples=100).iloc[0]
    validate_table("elasticity_share", domain_elasticity(anchored["elasticity"], n_resamples=100))
    assert zero["forgetting"] > 0.3  # built to forget: the prose's held-out loss rises by a third of a nat
    assert zero["forgetting_ewc"] == zero["forgetting"] and zero["elastic_share"] == 0  # λ = 0: the same steps
    assert share["forgetting"] == zero["forgetting"]  # the plain run does not depend on λ
    assert share["forgetting_ewc"] < 0.5 * share["forgetting"] and share["elastic_share"] > 0.5
    assert share["gain_ewc"] < share["gain"]  # the anchor also slows learning the tuned domain


def test_fisher_is_the_mean_squared_passage_gradient(tiny, small, naive_gradients):
    tables = measure_elasticity(tiny, small, fisher_passages=2, steps=1, progress=False)
    fisher = tables["elasticity_fisher"].set_index("block")
    validate_table("elasticity_fisher", fisher.reset_index())
    passages = [p for d in small.domains for p in [q for q in small.passages if q.domain == d][:2]]
    naive = naive_gradients(tiny, passages, 128)
    for block in fisher.index:
        squares = np.mean([v[block] ** 2 for v in naive], axis=0)  # F_i, coordinate by coordinate
        assert fisher.loc[block, "fisher_sum"] == pytest.approx(squares.sum(), rel=1e-4)
        assert fisher.loc[block, "fisher_max"] == pytest.approx(squares.max(), rel=1e-4)
        assert fisher.loc[block, "n_params"] == len(squares) and fisher.loc[block, "n_passages"] == 6


def test_an_anchored_step_is_the_exact_minimiser_of_the_linearised_loss_plus_anchor(tiny_gpt2, small):
    encoded = [ids[:40] for ids in encode(tiny_gpt2, [p.text for p in small.passages[:3]], "prepend")]
    probe, start = Probe(tiny_gpt2, encoded, 8), start_point(tiny_gpt2)
    pushed = {k: v + 0.01 * torch.randn_like(v) for k, v in start.items()}
    weight = {k: torch.rand_like(v) * 50 for k, v in start.items()}  # λF, large enough that lr λF > 1 somewhere
    lr = 0.05
    got = probe.descend(pushed, 1, lr, anchor=start, anchor_weight=weight)
    model = copy.deepcopy(tiny_gpt2.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(pushed[name])
    n = sum(len(ids) - 1 for ids in encoded)
    (sum(token_nll(model, ids, mask).sum() for _, ids, mask in batches(encoded, 8, tiny_gpt2.doc_start_id, "cpu"))
     / n).backward()
    for name, p in model.named_parameters():  # the zero of  g + (θ - θ_t) / lr + 2 λF (θ - θ*)
        want = (pushed[name] - lr * p.grad + 2 * lr * weight[name] * start[name]) / (1 + 2 * lr * weight[name])
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-7)


def test_share_summary_and_its_ci_over_domains():
    rows = []
    for domain, (none, ewc) in {"t": (-1.0, -0.5), "a": (0.4, 0.1), "b": (0.6, 0.3), "c": (0.2, 0.2)}.items():
        for penalty, change in (("none", none), ("ewc", ewc)):
            rows.append({"tuned_domain": "t", "domain": domain, "penalty": penalty, "loss_before": 3.0,
                         "loss_after": 3.0 + change, "change": change, "n_tokens": 10})
    row = domain_elasticity(pd.DataFrame(rows), n_resamples=500).iloc[0]
    assert row["n_domains"] == 3 and row["forgetting"] == pytest.approx(0.4)
    assert row["forgetting_ewc"] == pytest.approx(0.2) and row["elastic_share"] == pytest.approx(0.5)
    assert row["gain"] == 1.0 and row["gain_ewc"] == 0.5
    assert 0 <= row["ci_low"] <= 0.5 <= row["ci_high"] <= 0.75  # per-domain shares are 0.75, 0.5 and 0
    improved = pd.DataFrame(rows).assign(change=lambda t: -t["change"].abs())  # tuning made every domain better
    row = domain_elasticity(improved, n_resamples=500).iloc[0]
    assert row["forgetting"] < 0 and np.isnan([row["elastic_share"], row["ci_low"], row["ci_high"]]).all()


def test_run_instrument_validates_stores_and_leaves_the_model_as_found(store, tiny_gpt2, small):
    model = tiny_gpt2.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_instrument(store, tiny_gpt2, small, "elasticity", progress=False, bootstrap_resamples=100,
                            tune_domains="all", fisher_passages=1, steps=1, max_tokens=48)
    assert set(store.tables(result.run.id)) == {"elasticity", "elasticity_fisher", "elasticity_share"}
    assert result.run.status == "complete"
    assert len(result.tables["elasticity"]) == 3 * 3 * 2 and len(result.tables["elasticity_share"]) == 3
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("settings, message", [
    ({"tune_domains": "vernacular_dialect,weather"}, r"names \['weather'\], not domains of the corpus"),
    ({"fisher_passages": 3}, "every domain needs more than fisher_passages=3"),
    ({"fisher_passages": 0}, "must be at least 1"), ({"steps": 0}, "must be at least 1"),
    ({"lr": -1.0}, "lr must be above 0"), ({"ewc_lambda": -1.0}, "ewc_lambda must be at least 0")])
def test_bad_settings_are_one_clear_error(tiny_gpt2, small, settings, message):
    with pytest.raises(ValueError, match=message):
        measure_elasticity(tiny_gpt2, small, progress=False, **settings)


@pytest.mark.slow
def test_smollm2_probe_runs_and_validates(smollm2, shared_corpus):
    tables = measure_elasticity(smollm2, first_domains(shared_corpus, 2, 2), fisher_passages=1, steps=1, max_tokens=16,
                                progress=False)
    for name, table in tables.items():
        validate_table(name, table)
    validate_table("elasticity_share", domain_elasticity(tables["elasticity"], n_resamples=100))
    assert len(tables["elasticity_fisher"]) == 31 and (tables["elasticity_fisher"]["fisher_sum"] > 0).all()
