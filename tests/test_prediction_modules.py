"""The prediction modules themselves, end to end through pytest on tiny models.

Named forms must report "not run" here (their hub models are absent); every general
form must reach a real verdict. Cases are built so that the verdict logic is seen to
fail when it should: a random model knows no domain (P0b refuted), two layers give no
interval for a correlation over layers (inconclusive), and a model pair in which one
was tuned on the archaeological domains supports P3d in one order and refutes it in
the other.
"""

import copy
from pathlib import Path

import pytest
import torch

from atlas import STARTER_CORPUS, Store, load_corpus, load_model

PREDICTIONS = Path(__file__).resolve().parents[1] / "predictions"
ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")


def small_corpus(path: Path, per_domain: int) -> Path:
    lines = STARTER_CORPUS.read_text(encoding="utf-8").splitlines(True)
    path.write_text("".join(line for i, line in enumerate(lines) if i % 12 < per_domain), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """tiny-gpt2 saved as it is (base) and a copy tuned on the archaeological domains' passages (tuned)."""
    root = tmp_path_factory.mktemp("pair")
    lm = load_model("tiny-gpt2", device="cpu")
    tuned = copy.deepcopy(lm.model).train()
    texts = [p.text for p in load_corpus("starter").passages if p.domain in ARCHAEOLOGICAL]
    optimiser = torch.optim.Adam(tuned.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(60):
        ids = torch.tensor([[lm.doc_start_id] + lm.tokenizer(texts[step % len(texts)]).input_ids[:200]])
        loss = tuned(input_ids=ids, labels=ids).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for name, model in (("base", lm.model), ("tuned", tuned.eval())):
        model.save_pretrained(root / name)
        lm.tokenizer.save_pretrained(root / name)
    return str(root / "base"), str(root / "tuned")


# named forms on Lab runs Atlas trains itself (modular-addition seeds: minutes each when the cache is cold); their
# modules run end to end on tiny recipes in tests/test_geometry_predictions.py
LAB_TRAINED = ("test_p8_phase_transition.py", "test_p9_symmetry_orbits.py", "test_p10_algorithmic_branches.py")


def run_predictions(pytester, *options):
    db = f"sqlite:///{pytester.path / 'atlas.db'}"
    corpus = small_corpus(pytester.path / "corpus.jsonl", 4)
    ignored = [f"--ignore={PREDICTIONS / name}" for name in LAB_TRAINED]
    result = pytester.runpytest(str(PREDICTIONS), f"--atlas-corpus={corpus}", f"--atlas-db={db}", "-p",
                                "no:cacheprovider", "-rs", *ignored, *options)
    return result, {v.prediction: v for v in Store(db).latest_verdicts()}, Store(db)


def test_general_forms_reach_verdicts_and_named_forms_are_not_run(pytester, monkeypatch, pair):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result, verdicts, store = run_predictions(pytester, "--atlas-model=tiny-gpt2", f"--atlas-pair={pair[0]},{pair[1]}")
    general = {k: v for k, v in verdicts.items() if v.form == "general"}
    named = {k: v for k, v in verdicts.items() if v.form == "named"}
    assert set(general) == {"P0b-domain-perplexity-spread", "P1b-coupled-layers-resist", "P2c-named-domain-moves-most",
                            "P3c-tuning-variance", "P3d-tuning-archaeological", "P5d-coupling-rises",
                            "P6b-probe-tracks-hessian", "P6c-coupling-sets-curvature",
                            "P11-archaeological-basins-isolated"}, result.stdout.str()
    assert all(v.outcome != "not_run" for v in general.values()), {k: v.reason for k, v in general.items()}
    assert named and all(v.outcome == "not_run" and "not available" in v.reason for v in named.values())
    # built to be refuted: random weights find every domain equally hard
    assert general["P0b-domain-perplexity-spread"].outcome == "refuted"
    # built to be inconclusive: a correlation over two layers has no interval
    for pid in ("P1b-coupled-layers-resist", "P5d-coupling-rises", "P6b-probe-tracks-hessian",
                "P6c-coupling-sets-curvature"):
        assert general[pid].outcome == "inconclusive" and general[pid].evidence["n_layers"] == 2
    # built to be supported: the tuned copy learned the archaeological domains
    assert general["P3d-tuning-archaeological"].outcome == "supported"
    # P11 drew one line, from the first model of the pair to the second, and took a barrier per domain
    assert [(e.instrument, e.model) for e in store.events() if e.prediction == "P11-archaeological-basins-isolated"
            and e.action == "measured"] == [("interpolation", pair[0])]
    assert set(general["P11-archaeological-basins-isolated"].evidence["barrier"]) >= set(ARCHAEOLOGICAL)
    # every sample size is recorded with the verdict
    inputs = general["P6c-coupling-sets-curvature"].evidence["inputs"]
    assert {i["instrument"] for i in inputs} == {"coupling", "hessian"}
    assert all("max_tokens" in i["settings"] for i in inputs)
    # CISP sequenced the inputs: measured once, reused afterwards, in the declared order
    events = store.events()
    p6 = [(e.instrument, e.action) for e in events if e.prediction == "P6c-coupling-sets-curvature"]
    assert p6[:2] == [("coupling", "reused"), ("hessian", "measured")]
    assert (pytester.path / "reports" / "index.html").is_file()


def test_the_same_pair_in_the_other_order_refutes_the_archaeological_claim(pytester, monkeypatch, pair):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, verdicts, _ = run_predictions(pytester, f"--atlas-pair={pair[1]},{pair[0]}", "-k", "test_tuning_reduces_archaeological")
    assert verdicts["P3d-tuning-archaeological"].outcome == "refuted"
