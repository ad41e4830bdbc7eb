"""P8-P10, the real prediction modules, end to end through pytest on tiny Lab runs instead of modular-addition.

Each module is run as written, with only its named runs replaced (``RECIPE``, ``SEEDS``: the constants a
pre-registration names), in a Lab cache of its own. Cases built to be supported: a tiny run whose trajectory is
rewritten into a grokking curve (held-out accuracy jumps while the training loss is flat), and tiny seeds paired with
permuted copies of themselves (a barrier that matching removes). Cases built to fail: the tiny runs as trained
(held-out accuracy rises only while the training loss falls), and "second seeds" that are the same runs under another
recipe name (one function, one branch: no barrier to remove, CKA 1 between the "seeds"). P9b and P10 read disjoint
seed pairs (A1, B1, A2, B2, ...): each instrument runs on a pair's first seed towards its second.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from atlas import Store, load_model
from atlas.instruments._symmetry import permute, random_permutation
from atlas.lab import train

PREDICTIONS = Path(__file__).resolve().parents[1] / "predictions"
TINY = Path(__file__).resolve().parents[1] / "atlas" / "lab" / "recipes" / "tiny-modular.yaml"


def run(pytester, module: str, k: str | None = None, **constants) -> dict:
    """Run predictions/<module> with its named constants replaced; the verdicts by prediction id."""
    text = (PREDICTIONS / module).read_text(encoding="utf-8")
    for name, value in constants.items():
        text, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, count=1, flags=re.MULTILINE)
        assert n == 1, name
    path = pytester.makepyfile(**{Path(module).stem: text})
    runs = len(list(pytester.path.glob("atlas-*.db")))
    db = f"sqlite:///{pytester.path / f'atlas-{runs}.db'}"  # a store per run: its verdicts are this run's
    options = ["-k", k] if k else []
    pytester.runpytest(str(path), f"--atlas-db={db}", f"--atlas-reports={pytester.path / 'reports'}", "-p",
                       "no:cacheprovider", *options)
    return {v.prediction: v for v in Store(db).latest_verdicts()}


@pytest.fixture
def tiny11(tmp_path):
    """tiny-modular with p = 11: 60 held-out pairs, enough for P10's 8 parts of at least 4 probe pairs."""
    path = tmp_path / "tiny-11.yaml"
    path.write_text(TINY.read_text().replace("p: 7,", "p: 11,"))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def grokking_trajectory(run_dir: Path, seed: int) -> None:
    """Rewrite a finished tiny run's trajectory: held-out accuracy 0.3 (+-1%) until it jumps to 1 between steps 10
    and 20, training loss flat at 0.01 (+-1e-5) after step 0."""
    stored = json.loads((run_dir / "trajectory.json").read_text())
    rng = np.random.default_rng(seed)
    for row in stored["rows"]:
        row["heldout_acc"] = (1.0 if row["step"] >= 20 else 0.3) - 0.01 * rng.random()
        row["train_loss"] = 2.0 if row["step"] == 0 else 0.01 + 1e-5 * rng.random()
    (run_dir / "trajectory.json").write_text(json.dumps(stored))


def test_p8_supported_on_a_grokking_curve_and_not_on_the_tiny_runs_as_trained(pytester, cache):
    for seed in (0, 1, 2):
        grokking_trajectory(train("tiny-modular", seed=seed, progress=False).run_dir, seed)
    verdict = run(pytester, "test_p8_phase_transition.py", RECIPE='"tiny-modular"')["P8-grokking-phase-transition"]
    assert verdict.outcome == "supported" and verdict.n == 3 and verdict.evidence["seeds_satisfying"] == 3
    assert all(s["step"] == 15 for s in verdict.evidence["seeds"].values())  # the window 10-20
    twin = cache.parent / "tiny-twin.yaml"  # the same recipe, trained as it is: accuracy rises as the loss falls
    twin.write_text(TINY.read_text())
    verdict = run(pytester, "test_p8_phase_transition.py", RECIPE=f'"{twin}"')["P8-grokking-phase-transition"]
    assert verdict.outcome in ("refuted", "inconclusive") and verdict.evidence["seeds_satisfying"] == 0


def test_p9b_and_p10_on_disjoint_pairs_of_tiny_seeds(pytester, cache, tiny11):
    """Seeds (0, 1), (2, 3) as two pairs, each instrument run on a pair's first seed towards its second: barely
    trained seeds have no barrier worth lowering (P9b refuted: the reduction is rounding, below 0.01 nats)."""
    seeds = f"tuple(f'lab:{tiny11}@{{s}}' for s in range(4))"
    barrier = run(pytester, "test_p9_symmetry_orbits.py", SEEDS=seeds)["P9b-matching-lowers-barrier"]
    assert barrier.outcome == "refuted" and abs(barrier.effect) < 1e-3 and barrier.n == 4
    assert list(barrier.evidence["seed_pairs"]) == [f"lab:{tiny11}@0 vs lab:{tiny11}@1",
                                                    f"lab:{tiny11}@2 vs lab:{tiny11}@3"]
    branches = run(pytester, "test_p10_algorithmic_branches.py", SEEDS=seeds)["P10-algorithmic-branches"]
    assert branches.outcome in ("supported", "refuted", "inconclusive") and branches.evidence["pairs"] == 2
    pair = branches.evidence["seed_pairs"][f"lab:{tiny11}@0 vs lab:{tiny11}@1"]
    assert pair["peak_model"]["steps"][1] < pair["between_seeds"]["steps"][0]  # its own earlier peak


def test_p9_matching_removes_the_barrier_to_permuted_copies(pytester, cache, tiny11):
    longer = tiny11.with_name("tiny-11-150.yaml")  # trained long enough to have a barrier to its permuted copy
    longer.write_text(tiny11.read_text().replace("steps: 30", "steps: 150"))
    pairs = []
    for seed in (1, 2):
        source = train(longer, seed=seed, progress=False).checkpoints[-1][1]
        copy = cache.parent / f"permuted-{seed}" / source.name
        shutil.copytree(source, copy)  # the Lab metadata: the same run and split
        lm = load_model(str(source), device="cpu")
        permute(lm.model, random_permutation(lm.model, 3, residual=True)).save_pretrained(copy)
        pairs += [f"lab:{longer}@{seed}", str(copy)]
    verdict = run(pytester, "test_p9_symmetry_orbits.py", SEEDS=repr(tuple(pairs)))["P9b-matching-lowers-barrier"]
    assert verdict.outcome != "refuted" and verdict.effect > 0.1
    assert all(p["after"] < 1e-4 < p["before"] for p in verdict.evidence["seed_pairs"].values())


def test_seeds_against_their_twins_are_one_branch_with_no_barrier(pytester, cache, tiny11):
    twin = cache.parent / "tiny-twin.yaml"  # the same recipe under another name: a seed trains to the same weights
    twin.write_text(tiny11.read_text())
    seeds = repr(tuple(m for s in (1, 2) for m in (f"lab:{tiny11}@{s}", f"lab:{twin}@{s}")))
    barrier = run(pytester, "test_p9_symmetry_orbits.py", SEEDS=seeds)["P9b-matching-lowers-barrier"]
    assert barrier.outcome == "refuted" and barrier.effect == 0  # zero before and after, in every pair
    branches = run(pytester, "test_p10_algorithmic_branches.py", SEEDS=seeds)["P10-algorithmic-branches"]
    assert branches.outcome in ("refuted", "inconclusive") and branches.effect > 0
    pair = branches.evidence["seed_pairs"][f"lab:{tiny11}@1 vs lab:{twin}@1"]
    assert pair["between_seeds"]["cka"] == pytest.approx(1.0)
