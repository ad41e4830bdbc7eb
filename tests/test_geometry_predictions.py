"""P8-P10, the real prediction modules, end to end through pytest on tiny Lab runs instead of modular-addition.

Each module is run as written, with only its named runs replaced (``RECIPE``, ``SEEDS``, ``OTHER``: the constants
a pre-registration names), in a Lab cache of its own. Cases built to be supported: a tiny run whose trajectory is
rewritten into a grokking curve (held-out accuracy jumps while the training loss is flat), permutations of tiny
models, and two tiny seeds whose representations differ. Cases built to fail: the tiny runs as trained (held-out
accuracy rises only while the training loss falls), and a "second seed" that is the same run under another recipe
name (one function, one branch: no barrier to remove, CKA 1 between the "seeds").
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


def test_p9_and_p10_on_two_tiny_seeds(pytester, cache, tiny11):
    """Permutations are on the orbit (P9a supported); two barely trained seeds have no barrier worth lowering
    (P9b refuted: the reduction is rounding, below 0.01 nats); their representations differ (P10 supported)."""
    verdicts = run(pytester, "test_p9_symmetry_orbits.py", RECIPE=f'"{tiny11}"')
    assert verdicts["P9a-permutation-orbit"].outcome == "supported" and verdicts["P9a-permutation-orbit"].n == 48
    barrier = verdicts["P9b-matching-lowers-barrier"]
    assert barrier.outcome == "refuted" and abs(barrier.effect) < 1e-4 and barrier.evidence["seed_pairs"] == 2
    verdict = run(pytester, "test_p10_algorithmic_branches.py", RECIPE=f'"{tiny11}"')["P10-algorithmic-branches"]
    assert verdict.outcome == "supported" and verdict.n == 8 and verdict.evidence["seed_pairs"] == 2


def test_p9_matching_removes_the_barrier_to_a_permuted_copy(pytester, cache, tiny11):
    longer = tiny11.with_name("tiny-11-150.yaml")  # trained long enough to have a barrier to its permuted copy
    longer.write_text(tiny11.read_text().replace("steps: 30", "steps: 150"))
    source = train(longer, seed=1, progress=False).checkpoints[-1][1]
    copy = cache.parent / "permuted" / source.name
    shutil.copytree(source, copy)  # the Lab metadata: the same run and split
    lm = load_model(str(source), device="cpu")
    permute(lm.model, random_permutation(lm.model, 3, residual=True)).save_pretrained(copy)
    constants = {"RECIPE": f'"{longer}"', "SEEDS": f'("lab:{longer}@1",)', "OTHER": f'"{copy}"'}
    verdict = run(pytester, "test_p9_symmetry_orbits.py", k="barrier", **constants)["P9b-matching-lowers-barrier"]
    assert verdict.outcome == "supported" and verdict.effect > 0.1


def test_p9a_refuted_when_the_other_seed_lies_far_beyond_any_permutation(pytester, cache, tiny11):
    far = tiny11.with_name("tiny-11-far.yaml")  # the same task and split, initial weights 30 times larger
    far.write_text(tiny11.read_text().replace("init_std: 0.1", "init_std: 3.0"))
    constants = {"RECIPE": f'"{tiny11}"', "OTHER": f'"lab:{far}@0"'}
    verdict = run(pytester, "test_p9_symmetry_orbits.py", k="same_function", **constants)["P9a-permutation-orbit"]
    assert verdict.outcome == "refuted" and verdict.evidence["distance_ratio_median"] < 0.5


def test_a_seed_against_its_twin_is_one_branch_with_no_barrier(pytester, cache, tiny11):
    twin = cache.parent / "tiny-twin.yaml"  # the same recipe under another name: seed 1 trains to the same weights
    twin.write_text(tiny11.read_text())
    constants = {"RECIPE": f'"{tiny11}"', "SEEDS": f'("lab:{tiny11}@1",)', "OTHER": f'"lab:{twin}@1"'}
    barrier = run(pytester, "test_p9_symmetry_orbits.py", k="barrier", **constants)["P9b-matching-lowers-barrier"]
    assert barrier.outcome == "inconclusive" and barrier.effect == 0  # zero before and after, in every part
    branches = run(pytester, "test_p10_algorithmic_branches.py", **constants)["P10-algorithmic-branches"]
    assert branches.outcome == "refuted" and branches.effect > 0
    assert branches.evidence["last_layer"][f"lab:{tiny11}@1"]["between_seeds"]["cka"] == pytest.approx(1.0)
