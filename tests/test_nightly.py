"""The nightly replication as a matrix (``atlas nightly``, ``atlas._nightly``): one pytest run per (model, corpus)
cell into one store, the night's verdicts and flips, the matrix with each claim's replication across models; on
the local Ray cluster (.ci/ray) the same matrix gives the same verdicts."""

import json

import pytest
from click.testing import CliRunner

from atlas import STARTER_CORPUS
from atlas._store import Store
from atlas.cli import main

from _cluster_support import predictions, ray_address

@pytest.fixture
def matrix(tmp_path, monkeypatch):
    """A project of two small corpora (two passages a domain, different ones) and a prediction module; the
    matrix's command line without its store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as a one-CPU Ray task runs: one torch thread
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "test_matrix.py").write_text(predictions(2.0), encoding="utf-8")
    lines = STARTER_CORPUS.read_text(encoding="utf-8").splitlines(True)
    for name, first in (("one", 0), ("two", 2)):
        (tmp_path / f"{name}.jsonl").write_text("".join(line for i, line in enumerate(lines)
                                                        if first <= i % 12 < first + 2), encoding="utf-8")
    return tmp_path, ["nightly", "--models", "tiny-gpt2,tiny-llama", "--corpora", "one.jsonl,two.jsonl",
                      "--cells-at-once", "2", "--out", "reports"]


def _night(folder) -> dict[tuple, tuple]:
    verdicts = json.loads((folder / "reports" / "verdicts.json").read_text(encoding="utf-8"))["verdicts"]
    return {(v["prediction"], v["model"], v["corpus"]): (v["outcome"], v["effect"], v["ci_low"], v["ci_high"])
            for v in verdicts}


def test_the_matrix_replicates_every_prediction_over_models_and_corpora_and_reports_flips(matrix):
    folder, command = matrix
    db = f"sqlite:///{folder / 'atlas.db'}"
    first = CliRunner().invoke(main, [*command, "--db", db])
    assert first.exit_code == 0, first.output
    assert "corpus one:" in first.output and "corpus two:" in first.output
    assert first.output.count("supported on 2 of 2 model(s)") == 4  # two predictions x two corpora
    night = _night(folder)
    assert len(night) == 8 and {o for o, *_ in night.values()} == {"supported"}
    runs = len(Store(db).runs())
    assert runs == 8  # two instruments x two models x two corpora, each measured once

    # the next night: the coupling claim tightened, so its verdicts flip; what the store holds is reused
    (folder / "predictions" / "test_matrix.py").write_text(predictions(-1.0), encoding="utf-8")
    second = CliRunner().invoke(main, [*command, "--db", db])
    assert second.exit_code == 3, second.output
    flips = json.loads((folder / "reports" / "flips.json").read_text(encoding="utf-8"))["flips"]
    assert sorted((f["prediction"], f["model"], f["from"], f["to"]) for f in flips) == sorted(
        ("T-coupling", m, "supported", "refuted") for m in ("tiny-gpt2", "tiny-llama") for _ in range(2))
    assert "supported on 0 of 2 model(s)" in second.output and (folder / "reports/verdicts.previous.json").is_file()
    assert len(Store(db).runs()) == runs  # nothing measured again


def test_a_bad_matrix_is_one_usage_error_and_a_crashed_cell_exits_1(matrix):
    folder, command = matrix
    typo = CliRunner().invoke(main, ["nightly", "--models", "tiny-gtp2"])
    assert typo.exit_code == 2 and "did you mean tiny-gpt2" in typo.output
    sqlite_on_ray = CliRunner().invoke(main, ["nightly", "--models", "tiny-gpt2", "--executor", "ray"])
    assert sqlite_on_ray.exit_code == 2 and "a SQLite file is one machine's" in sqlite_on_ray.output
    crashed = CliRunner().invoke(main, ["nightly", "no/such/folder", "--models", "tiny-gpt2", "--corpora", "one.jsonl",
                                        "--db", f"sqlite:///{folder / 'atlas.db'}"])
    assert crashed.exit_code == 1 and "CRASH: pytest on tiny-gpt2, one.jsonl exited 4" in crashed.output


@pytest.mark.postgres
def test_the_matrix_on_the_ray_cluster_gives_the_verdicts_of_a_local_night(matrix, postgres_url):
    address = ray_address()
    folder, command = matrix
    local = CliRunner().invoke(main, [*command, "--db", f"sqlite:///{folder / 'atlas.db'}", "--out", "local"])
    assert local.exit_code == 0, local.output
    (folder / "reports").mkdir()
    (folder / "local" / "verdicts.json").rename(folder / "reports" / "verdicts.json")
    on_ray = CliRunner().invoke(main, [*command, "--db", postgres_url, "--executor", "ray", "--ray-address", address,
                                       "--previous", "reports/verdicts.json", "--out", "cluster"])
    assert on_ray.exit_code == 0, on_ray.output
    assert "measured perplexity on tiny-llama on the cluster" in on_ray.output, on_ray.output
    assert "0 flip(s) among 8 verdicts in both files" in on_ray.output
    cluster = json.loads((folder / "cluster" / "verdicts.json").read_text(encoding="utf-8"))["verdicts"]
    assert {(v["prediction"], v["model"], v["corpus"]): (v["outcome"], v["effect"], v["ci_low"], v["ci_high"])
            for v in cluster} == _night(folder)
