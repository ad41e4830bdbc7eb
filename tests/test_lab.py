"""The Atlas Lab: recipes, the trainer's determinism, checkpoints as models, data streams, the CLI."""

import json
import random
import re

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from atlas import STARTER_CORPUS, ModelUnavailable, Store, load_corpus, load_model, validate_table
from atlas._store import ProtocolLog
from atlas._predict import AtlasSession
from atlas._schema import coerce
from atlas.cli import main
from atlas.lab import LabError, LabRuns, evaluate_modular, lab_checkpoint, load_recipe, recipe_names, train
from atlas.lab._data import split_passages, training_batches
from atlas.lab._recipe import Checkpoints

BUNDLED = {"modular-addition", "corpus-lm", "finetune-smollm2", "finetune-smollm2-academic", "tiny-modular", "tiny-corpus"}


@pytest.fixture(scope="module")
def modular_run(tmp_path_factory):
    return train("tiny-modular", out=tmp_path_factory.mktemp("lab"), progress=False)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    return train("tiny-corpus", out=tmp_path_factory.mktemp("lab"), progress=False)


def weights(path):
    return load_file(path / "model.safetensors")


def starter_lines():
    return [line for line in STARTER_CORPUS.read_text().splitlines() if line.strip()]


def write_recipe(tmp_path, text, name="r"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


# --- recipes -------------------------------------------------------------------------------

def test_every_bundled_recipe_loads_and_its_hash_ignores_name_description_and_seed():
    assert BUNDLED <= set(recipe_names())
    for name in recipe_names():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.hash.startswith("sha256:")
        assert recipe.checkpoint_steps[-1] == recipe.steps
    tiny = load_recipe("tiny-modular")
    assert tiny.updated({"seed": 5}).hash == tiny.hash
    assert tiny.updated({"steps": 31}).hash != tiny.hash
    assert tiny.updated({"optimiser": {"lr": 0.02}}).hash != tiny.hash


def test_a_recipe_file_round_trips_through_its_resolved_form(tmp_path):
    recipe = load_recipe("tiny-corpus")
    path = write_recipe(tmp_path, json.dumps({k: v for k, v in recipe.as_dict().items() if k != "name"}),
                        "tiny-corpus")
    assert load_recipe(path) == recipe and load_recipe(path).hash == recipe.hash


def test_the_hash_follows_the_corpus_content_not_its_path(tmp_path):
    lines = starter_lines()
    (tmp_path / "same.jsonl").write_text("\n".join(lines) + "\n")
    recipe = load_recipe("tiny-corpus")
    assert recipe.updated({"data": {"corpus": str(tmp_path / "same.jsonl")}}).hash == recipe.hash
    (tmp_path / "fewer.jsonl").write_text("\n".join(lines[1:]) + "\n")
    assert recipe.updated({"data": {"corpus": str(tmp_path / "fewer.jsonl")}}).hash != recipe.hash


def test_checkpoint_steps_are_initial_log_spaced_regular_and_final():
    assert Checkpoints(log=4, every=300, initial=True).steps(1000) == [0, 1, 10, 100, 300, 600, 900, 1000]
    assert Checkpoints(log=0, every=0, initial=False).steps(7) == [7]


@settings(max_examples=25)
@given(log=st.integers(0, 30), every=st.integers(0, 500), initial=st.booleans(), total=st.integers(1, 5000))
def test_checkpoint_steps_property(log, every, initial, total):
    steps = Checkpoints(log, every, initial).steps(total)
    assert steps == sorted(set(steps)) and steps[-1] == total and all(0 <= s <= total for s in steps)
    assert (0 in steps) == initial
    assert every == 0 or set(range(every, total + 1, every)) <= set(steps)
    assert log == 0 or len([s for s in steps if s >= 1]) >= min(log, total) // 2


@settings(max_examples=15)
@given(fraction=st.floats(0.2, 0.8), split_seed=st.integers(0, 10**6))
def test_the_split_is_a_partition_in_the_same_proportion_per_domain(fraction, split_seed):
    corpus = load_corpus("starter")
    held_in, held_out = split_passages(corpus, None, fraction, split_seed)
    ids_in, ids_out = {p.id for p in held_in.passages}, {p.id for p in held_out.passages}
    assert not ids_in & ids_out and ids_in | ids_out == {p.id for p in corpus.passages}
    for domain in corpus.domains:
        n = sum(p.domain == domain for p in corpus.passages)
        assert sum(p.domain == domain for p in held_in.passages) == round(fraction * n)


TINY = """kind: modular_addition
architecture: {shape: gpt2, layers: 1, heads: 2, d_model: 16, context: 3}
data: {p: 7, train_fraction: 0.5}
optimiser: {lr: 1.0e-2}
steps: 3
batch: full
"""


@pytest.mark.parametrize("change, message", [
    (("optimiser: {lr: 1.0e-2}", "optimizer: {lr: 1.0e-2}"), "unknown field 'optimizer' (did you mean 'optimiser'?)"),
    (("steps: 3\n", ""), "'r': steps is required"),
    (("kind: modular_addition", "kind: grokking"), "kind must be one of modular_addition, corpus_lm, finetune"),
    (("d_model: 16", "d_model: 16, kv_heads: 1"), "architecture.kv_heads is only for shape llama"),
    (("d_model: 16", "d_model: 15"), "architecture.d_model (15) must be a multiple of heads (2)"),
    (("{lr: 1.0e-2}", "{lr: -1}"), "optimiser.lr must lie in (0, inf), not -1"),
    (("{lr: 1.0e-2}", "{lr: 1.0e-2, betas: [0.9]}"), "optimiser.betas must be a list of two numbers"),
    (("train_fraction: 0.5", "train_fraction: 1.0"), "data.train_fraction must lie in (0, 1)"),
    (("context: 3", "context: 2"), "architecture.context must be at least 3"),
    (("batch: full", "batch: many"), "batch must be a whole number"),
    (("steps: 3", "steps: 3.5"), "steps must be a whole number, not 3.5"),
])
def test_a_bad_recipe_is_one_error_naming_the_field(tmp_path, change, message):
    path = write_recipe(tmp_path, TINY.replace(*change))
    with pytest.raises(LabError) as caught:
        load_recipe(path)
    assert message in str(caught.value)


def test_corpus_recipe_errors_name_the_field(tmp_path):
    base = load_recipe("tiny-corpus")
    with pytest.raises(LabError, match="'full' is only for modular_addition"):
        base.updated({"batch": "full"})
    with pytest.raises(LabError, match="curriculum names the domains .* list the same domains"):
        base.updated({"data": {"domains": ["poetry", "spanish"]}})
    with pytest.raises(LabError, match="data.window .* exceeds architecture.context"):
        base.updated({"data": {"window": 2048}})
    with pytest.raises(LabError, match="finetune takes|takes its architecture from data.init"):
        base.updated({"kind": "finetune", "data": {"init": "tiny-gpt2"}})


def test_an_alias_bomb_and_a_non_mapping_are_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
    with pytest.raises(LabError, match=r"line 2: YAML alias \*a refused"):
        load_recipe(write_recipe(tmp_path, bomb))
    with pytest.raises(LabError, match="must be a YAML mapping .* it holds a list"):
        load_recipe(write_recipe(tmp_path, "- kind: modular_addition\n"))
    with pytest.raises(LabError, match="no recipe 'grokking': use one of"):
        load_recipe("grokking")


# --- training: determinism, checkpoints, trajectory ------------------------------------------

def test_two_runs_give_bit_identical_weights_and_trajectory(modular_run, tmp_path):
    again = train("tiny-modular", out=tmp_path, progress=False)
    assert not again.reused and [s for s, _ in again.checkpoints] == [s for s, _ in modular_run.checkpoints]
    for (_, a), (_, b) in zip(modular_run.checkpoints, again.checkpoints):
        wa, wb = weights(a), weights(b)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert again.trajectory.equals(modular_run.trajectory)


def test_another_seed_gives_other_weights(modular_run, tmp_path):
    other = train("tiny-modular", seed=1, out=tmp_path, progress=False)
    wa, wb = weights(modular_run.checkpoints[0][1]), weights(other.checkpoints[0][1])
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_measuring_checkpoints_does_not_change_the_training(modular_run, tmp_path):
    """Evaluation and the gradient norm at checkpoints must leave weights and optimiser untouched."""
    recipe = load_recipe("tiny-modular").updated({"checkpoints": {"log": 0, "every": 0, "initial": False}})
    bare = train(recipe, out=tmp_path, progress=False)
    assert [s for s, _ in bare.checkpoints] == [30]
    wa, wb = weights(modular_run.checkpoints[-1][1]), weights(bare.checkpoints[-1][1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_trajectory_validates_and_training_moved(modular_run, corpus_run):
    for run in (modular_run, corpus_run):
        validate_table("trajectory", run.trajectory)
        assert list(run.trajectory.step) == [s for s, _ in run.checkpoints] == run.recipe.checkpoint_steps
    first, last = modular_run.trajectory.iloc[0], modular_run.trajectory.iloc[-1]
    assert last.train_loss < first.train_loss - 0.5 and last.train_acc > first.train_acc
    assert corpus_run.trajectory.train_loss.iloc[-1] < corpus_run.trajectory.train_loss.iloc[0] - 0.3


def test_checkpoints_are_models_for_atlas_and_transformers(modular_run, corpus_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = modular_run.checkpoints[-1][1]
    lm = load_model(str(path), device="cpu")
    assert (lm.doc_start_token, lm.doc_start_from) == ("<s>", "bos")
    tok = AutoTokenizer.from_pretrained(path)
    assert tok("3 5 =").input_ids == [3, 5, 7] and tok.decode([3, 5, 7]) == "3 5 ="
    hf = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([[3, 5, 7]])
    assert torch.equal(hf(ids).logits, lm.model(ids).logits)
    corpus_lm = load_model(str(corpus_run.checkpoints[-1][1]), device="cpu")
    assert corpus_lm.model.config.model_type == "llama" and corpus_lm.doc_start_token == "<s>"
    assert corpus_lm.tokenizer("ab", add_special_tokens=False).input_ids == [
        corpus_lm.tokenizer.convert_tokens_to_ids(c) for c in "ab"]


def test_an_instrument_measures_a_corpus_checkpoint_through_cisp(corpus_run, store, starter):
    """A checkpoint directory is a model name: its context holds every starter passage, its revision is recorded."""
    from atlas import run_instrument

    lm = load_model(str(corpus_run.checkpoints[-1][1]), device="cpu")
    result = run_instrument(store, lm, starter.sample(1), "perplexity", progress=False)
    assert len(result.tables["perplexity"]) == 8 and result.run.model_revision.startswith("dir:")


def test_a_checkpoint_finds_its_run_its_trajectory_and_its_heldout_data(modular_run, corpus_run):
    step, path = modular_run.checkpoints[2]
    info = lab_checkpoint(path)
    assert (info.recipe, info.seed, info.step) == (modular_run.recipe, 0, step)
    assert info.recipe_hash == modular_run.recipe.hash and info.checkpoints == modular_run.checkpoints
    assert info.trajectory().equals(modular_run.trajectory)
    task = info.modular_task()
    assert len(task.train_idx) + len(task.heldout_idx) == 49 and info.split["n_heldout"] == len(task.heldout_idx)
    assert not set(task.train_idx.tolist()) & set(task.heldout_idx.tolist())
    # the trainer's numbers, recomputed from the checkpoint on disk (same computation, same weights)
    row = modular_run.trajectory.set_index("step").loc[step]
    measured = evaluate_modular(path)
    assert measured == pytest.approx({k: row[k] for k in measured}, abs=1e-6)
    train_passages, heldout = lab_checkpoint(corpus_run.checkpoints[-1][1]).corpus_split()
    assert {p.domain for p in heldout.passages} == {"technical_documentation", "poetry"}
    assert not {p.id for p in train_passages.passages} & {p.id for p in heldout.passages}
    with pytest.raises(LabError, match="is not a Lab checkpoint"):
        lab_checkpoint(path.parent)


def test_a_finished_run_is_reused_and_another_recipe_in_its_place_is_refused(modular_run):
    out = modular_run.run_dir.parents[1]
    again = train("tiny-modular", out=out, progress=False)
    assert again.reused and again.trajectory.equals(modular_run.trajectory)
    assert again.checkpoints == modular_run.checkpoints
    with pytest.raises(LabError, match="holds a run of another version of recipe 'tiny-modular'"):
        train("tiny-modular", out=out, steps=12, progress=False)


def test_a_diverging_run_is_one_clear_error(tmp_path):
    recipe = load_recipe("tiny-modular").updated({"optimiser": {"lr": 1.0e12}})
    with pytest.raises(LabError, match="diverged .* lower optimiser.lr"):
        train(recipe, out=tmp_path, progress=False)


def test_progress_without_a_terminal_is_whole_lines(tmp_path, capsys):
    train("tiny-modular", out=tmp_path, steps=3, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "train tiny-modular seed 0" in err and "3/3" in err


# --- data streams ----------------------------------------------------------------------------

def domains_by_step(recipe, seed=0):
    return [set(batch.domains) for batch in training_batches(recipe, seed)]


def test_curricula_give_different_data_orders():
    a_b = load_recipe("tiny-corpus")
    first, second = a_b.data.curriculum
    b_a = a_b.updated({"data": {"curriculum": [second, first]}})
    shuffled = a_b.updated({"data": {"curriculum": "shuffled", "domains": [first, second]}})
    half = a_b.steps // 2
    assert domains_by_step(a_b) == [{first}] * half + [{second}] * half
    assert domains_by_step(b_a) == [{second}] * half + [{first}] * half
    mixed = domains_by_step(shuffled)
    assert set().union(*mixed[:half]) == {first, second} and set().union(*mixed[half:]) == {first, second}
    sources = lambda r, seed: [b.sources for b in training_batches(r, seed)]
    assert sources(shuffled, 0) == sources(shuffled, 0) != sources(shuffled, 1)


def test_full_batch_is_every_training_pair_at_every_step():
    recipe = load_recipe("tiny-modular")
    batches = list(training_batches(recipe, 0))
    assert len(batches) == recipe.steps and len(batches[0].sources) == round(0.5 * 49)
    assert all(torch.equal(b.input_ids, batches[0].input_ids) for b in batches)
    a, b, eq = batches[0].input_ids.T
    assert torch.equal(batches[0].targets[:, -1], (a + b) % 7) and bool((eq == 7).all())
    assert bool((batches[0].targets[:, :2] == -100).all())


FINETUNE = """kind: finetune
data: {init: tiny-gpt2, corpus: CORPUS, train_fraction: 0.5, split_seed: 3, window: 64}
optimiser: {lr: 1.0e-3}
steps: 40
batch: 4
"""


def test_the_finetune_split_keeps_heldout_passages_out_of_training(tmp_path):
    """Every passage a finetune run trains on is held in; no held-out passage ever reaches a batch."""
    recipe = load_recipe(write_recipe(tmp_path, FINETUNE.replace("CORPUS", "starter"), "tune"))
    corpus = load_corpus("starter")
    held_in, held_out = split_passages(corpus, None, 0.5, 3)
    for domain in corpus.domains:
        n_in = sum(p.domain == domain for p in held_in.passages)
        assert n_in == sum(p.domain == domain for p in held_out.passages) == 6
    seen = {s for batch in training_batches(recipe, 0) for s in batch.sources}
    assert seen and seen <= {p.id for p in held_in.passages}
    assert not seen & {p.id for p in held_out.passages}
    # the split depends on the ids alone: a reordered file splits the same way
    lines = starter_lines()
    random.Random(0).shuffle(lines)
    (tmp_path / "shuffled.jsonl").write_text("\n".join(lines) + "\n")
    _, held_out_again = split_passages(load_corpus(tmp_path / "shuffled.jsonl"), None, 0.5, 3)
    assert {p.id for p in held_out_again.passages} == {p.id for p in held_out.passages}
    assert {p.id for p in split_passages(corpus, None, 0.5, 4)[1].passages} != {p.id for p in held_out.passages}


def test_a_finetuned_checkpoint_keeps_its_init_models_document_start(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, FINETUNE.replace("CORPUS", "starter").replace("steps: 40", "steps: 2"),
                                      "tune"))
    run = train(recipe, out=tmp_path, progress=False)
    base = load_model("tiny-gpt2", device="cpu")
    tuned = load_model(str(run.checkpoints[-1][1]), device="cpu")
    assert (tuned.doc_start_token, tuned.doc_start_id) == (base.doc_start_token, base.doc_start_id)
    assert lab_checkpoint(run.checkpoints[-1][1]).meta["init"].startswith("tiny-gpt2@")
    step0 = weights(run.checkpoints[0][1])
    assert all(torch.equal(t, dict(base.model.named_parameters())[k]) for k, t in step0.items()
               if k in dict(base.model.named_parameters()))


# --- command line ----------------------------------------------------------------------------

def test_atlas_train_json(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    args = ["train", "tiny-modular", "--seed", "2", "--steps", "4", "--out", str(tmp_path), "--db", db, "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    again = json.loads(CliRunner().invoke(main, args).stdout)
    assert again["reused"] and again["run_id"] == out["run_id"]  # the stored trajectory, reused
    [run] = Store(db).runs(instrument="lab")
    assert run.provenance == "trained" and run.model == "lab:tiny-modular@2" and run.seed == 2
    pd.testing.assert_frame_equal(Store(db).tables(run.id)["trajectory"],
                                  coerce("trajectory", pd.DataFrame(out["trajectory"])))
    assert [c["step"] for c in out["checkpoints"]] == [r["step"] for r in out["trajectory"]] == [0, 1, 2, 4]
    assert out["checkpoints"][-1]["path"] == str(tmp_path / "tiny-modular" / "seed-2" / "step-4")
    assert set(out["trajectory"][0]) == {"step", "train_loss", "heldout_loss", "train_acc", "heldout_acc",
                                         "weight_norm", "grad_norm"}
    bad = CliRunner().invoke(main, ["train", "no-such-recipe", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "no recipe 'no-such-recipe'" in bad.output and "Traceback" not in bad.output


def test_a_lab_run_is_a_model_name_and_every_path_that_trains_stores_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="Lab resolver"):  # loading never trains
        load_model("lab:tiny-modular@3", device="cpu")
    assert not (tmp_path / "lab").exists()
    store = Store("sqlite://")
    lm = load_model("lab:tiny-modular@3", device="cpu", lab=LabRuns(store, ProtocolLog(store, "s1")))
    assert lm.name == "lab:tiny-modular@3" and lm.path.endswith("seed-3/step-30")
    assert lab_checkpoint(lm.path).seed == 3 and lm.revision.startswith(f"dir:{lm.path}@sha256:")
    [trained] = store.runs(instrument="lab")  # trained now, and stored as a run
    assert trained.provenance == "trained" and trained.model == "lab:tiny-modular@3"
    assert [(e.session, e.action) for e in store.events()] == [("s1", "measured")]
    session = AtlasSession(model_name="lab:tiny-modular@3", corpus_path="starter", db_url="sqlite://",
                           reports_dir=tmp_path)
    session.lab = LabRuns(session.store, session.log)  # what the plugin injects
    assert session.model("lab:tiny-modular@3").revision == lm.revision  # the same checkpoint, from disk
    [run] = session.store.runs(instrument="lab")
    assert [e.action for e in session.store.events()] == ["measured"]  # stored once, from the checkpoints on disk
    with pytest.raises(LabError, match="not a Lab model name"):
        load_model("lab:", device="cpu", lab=LabRuns(store))


def test_threads_resolving_one_lab_run_at_once_train_and_store_it_once(tmp_path, monkeypatch):
    """The run's lock is exclusive between threads too (each has its own hold on it); within one thread it is
    re-entrant (LabRuns holds it around train, which takes it again). Processes: tests/reliability/test_lab_races.py."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    lab = LabRuns(store, ProtocolLog(store, "s1"))
    with ThreadPoolExecutor(3) as pool:
        paths = set(pool.map(lambda _: lab("lab:tiny-modular@4"), range(3)))
    assert len(paths) == 1 and len(store.runs(instrument="lab")) == 1
    assert sorted(e.action for e in store.events()) == ["measured", "reused", "reused"]
    assert list((tmp_path / "lab").glob("*/tiny-modular/seed-4.lock")) and not list(tmp_path.rglob("*.partial*"))


def test_runs_prepared_side_by_side_are_the_bits_of_one_after_another(tmp_path, monkeypatch, capsys):
    """LabRuns.prepare trains the missing small runs in worker processes (progress lines passed on); each is
    then stored when first asked for, with the weights a lone training gives."""
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    lab = LabRuns(store, ProtocolLog(store, "s1"), progress=True)
    tiny = load_recipe("tiny-modular")
    lab.prepare([(tiny, 5), (tiny, 6), (tiny, 5)], workers=2)
    assert "train 2 Lab runs, 2 at a time" in capsys.readouterr().err and not store.runs()  # nothing stored yet
    alone = train(tiny, seed=6, out=tmp_path / "alone", progress=False)
    prepared = lab.train(tiny, 6)
    assert prepared.reused and prepared.trajectory.equals(alone.trajectory)
    assert all(torch.equal(weights(prepared.checkpoints[-1][1])[k], v)
               for k, v in weights(alone.checkpoints[-1][1]).items())
    assert [e.action for e in store.events()] == ["measured"]  # stored once, from the checkpoints on disk
    [run] = store.runs(instrument="lab")  # the training's own time, not the moment it was stored
    assert prepared.wall_s > 0 and (run.ended_at - run.started_at).total_seconds() == pytest.approx(prepared.wall_s, abs=1e-3)
    lab.prepare([(tiny, 5), (tiny, 6)], workers=2)  # both on disk: nothing to train
    assert "Lab runs" not in capsys.readouterr().err


def test_atlas_measure_stores_the_training_of_a_lab_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    db = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(main, ["measure", "perplexity", "--model", "lab:tiny-corpus@0", "--db", db,
                                       "--json", "--per-domain", "1"])
    assert result.exit_code == 0, result.output
    runs = Store(db).runs()
    assert {r.instrument for r in runs} == {"lab", "perplexity"}
    assert len({e.session for e in Store(db).events()}) == 1  # the training and the measurement: one session


@pytest.mark.slow
def test_modular_addition_memorises_before_it_generalises(tmp_path):
    """The first few hundred steps of the grokking recipe: training pairs learnt, held-out pairs not yet."""
    run = train("modular-addition", out=tmp_path, steps=300, progress=False)
    last = run.trajectory.iloc[-1]
    assert last.train_acc >= 0.99 and last.heldout_acc < 0.5


def test_a_run_trained_before_cpu_time_was_recorded_is_stored(tmp_path):
    from atlas.lab._runs import trained_run

    result = train("tiny-modular", seed=5, steps=4, out=tmp_path, progress=False)
    stored = json.loads((result.run_dir / "trajectory.json").read_text())
    del stored["cpu_s"]  # as older runs were written
    (result.run_dir / "trajectory.json").write_text(json.dumps(stored))
    _, run = trained_run(Store("sqlite://"), "tiny-modular", 5, out=tmp_path, steps=4, progress=False)
    assert run.settings["cpu_s"] is None and run.settings["wall_s"] == stored["wall_s"]


def test_a_trainings_log_entry_says_what_the_plan_expected(tmp_path, monkeypatch):
    """The protocol log of a Lab training puts its wall time beside the recipe's timed training scaled by its steps
    (``atlas._costs.training_estimate``); a recipe never timed has no estimate to show."""
    import atlas._costs
    from atlas.lab._runs import trained_run

    monkeypatch.setattr(atlas._costs, "_calibration", lambda: {"lab": {"tiny-modular": {
        "steps": 2, "seconds": 1.0, "peak_mb": 10.0}}})
    store = Store("sqlite://")
    trained_run(store, "tiny-modular", 5, out=tmp_path, steps=4, progress=False)
    monkeypatch.setattr(atlas._costs, "_calibration", lambda: {})
    trained_run(store, "tiny-modular", 6, out=tmp_path, steps=4, progress=False)
    reasons = [e.reason for e in store.events() if e.action == "measured"]
    assert re.fullmatch(r"trained in [\d.]+ (s|min), the plan expected 2\.0 s", reasons[0]), reasons
    assert re.fullmatch(r"trained in [\d.]+ (s|min)", reasons[1]), reasons
