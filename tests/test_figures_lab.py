"""The Lab's and the weight-space geometry instruments' figures (atlas._figures._lab), checked on the coordinates
of small constructed tables (tests/conftest.py's ``lab_tables``, part of ``instrument_tables``), on missing
values, on the tables the instruments really write for tiny Lab runs, and once rendered in a report."""

import math
import re

import numpy as np
import pytest

from atlas import Store, load_model, render_report, validate_table
from atlas._figures import FIGURES, figures_for
from atlas._figures import _lab
from atlas._store import Run, utcnow

LABELS = {"model": "lab:tiny-modular@0", "corpus": "starter-v1", "run": "0123456789abcdef",
          "settings": {"other": "lab:tiny-modular@1"}}
KINDS = ["training_curves", "branch_cka", "memory_endpoints", "memory_cka", "symmetry_orbits", "symmetry_matching"]


@pytest.fixture(scope="module")
def tables(instrument_tables):
    return instrument_tables


def build(kind, tables, labels=LABELS):
    fig = FIGURES[kind]
    return fig.build({t: tables[t] for t in fig.tables}, labels, {})


def test_the_constructed_tables_match_their_schemas(tables):
    for name, table in tables.items():
        validate_table(name, table)


def test_the_lab_figures_come_after_the_instruments_in_registration_order(tables):
    assert list(FIGURES)[-len(KINDS):] == KINDS
    ours = {t: tables[t] for kind in KINDS for t in FIGURES[kind].tables}
    assert [f["kind"] for f in figures_for(ours, LABELS, {})] == KINDS


# --- training curves ---------------------------------------------------------------------------------------


def _x_of_step(fig, step):
    [x] = {p["x"] for s in fig["series"] for p in s["points"] if p["title"].startswith(f"step {step}:")}
    return x


def test_training_curves_shade_the_jump_window_between_its_steps(tables):
    fig = build("training_curves", tables)
    band = fig["band"]
    assert band["x"] == pytest.approx(_x_of_step(fig, 600))  # the summary's window: steps 600 to 700
    assert band["x"] + band["w"] == pytest.approx(_x_of_step(fig, 700))
    assert band["x"] < band["x_star"] < band["x"] + band["w"]
    assert "held-out accuracy rises at λ* = 650" in band["label"] and "jump ratio 42" in band["label"]
    assert band["top"] < band["bottom"] and band["bottom"] == fig["axes"][2]["at"]  # across both panels
    assert sorted(m["label"].split(" ")[1] for m in fig["marks"]) == ["Fourier", "generalisation", "weight"]
    assert "n = 11 checkpoints, 50 held-out targets" in fig["caption"]


def test_training_curves_draw_four_ordered_series_and_a_log_loss_axis(tables):
    fig = build("training_curves", tables)
    by = {s["column"]: s for s in fig["series"]}
    assert set(by) == {"train_acc", "heldout_acc", "train_loss", "heldout_loss"}
    for s in fig["series"]:
        xs = [p["x"] for p in s["points"]]
        assert len(xs) == 11 and xs == sorted(xs)
    at_300 = {c: next(p["y"] for p in by[c]["points"] if p["title"].startswith("step 300:")) for c in by}
    assert at_300["train_acc"] < at_300["heldout_acc"]  # training accuracy higher: up the page
    assert at_300["train_loss"] > at_300["heldout_loss"]  # training loss lower: down the page
    acc_axis, loss_axis = fig["axes"][1], fig["axes"][3]
    assert acc_axis["end"] < loss_axis["start"]  # accuracy above loss
    assert "log scale" in loss_axis["label"] and [t["label"] for t in acc_axis["ticks"]][0] == "0"
    assert all(float(t["value"]).is_integer() for t in fig["axes"][0]["ticks"])  # steps are whole numbers


def test_training_curves_sort_checkpoints_and_skip_missing_values(tables):
    phase = tables["phase_transitions"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    phase.loc[phase["step"] == 300, "heldout_acc"] = np.nan
    phase.loc[phase["step"] == 500, "train_loss"] = np.nan
    fig = _lab.training_curves({"phase_transitions": phase,
                                "phase_transitions_summary": tables["phase_transitions_summary"]}, LABELS, {})
    by = {s["column"]: s for s in fig["series"]}
    assert len(by["heldout_acc"]["points"]) == 10 and len(by["train_loss"]["points"]) == 10
    assert not any(p["title"].startswith("step 300:") for p in by["heldout_acc"]["points"])
    xs = [p["x"] for p in by["train_acc"]["points"]]
    assert xs == sorted(xs) and "nan" not in by["heldout_acc"]["line"]


def test_training_curves_without_a_window_or_a_positive_loss(tables):
    summary = tables["phase_transitions_summary"].assign(window_start=np.nan)
    phase = tables["phase_transitions"].assign(train_loss=0.0)
    fig = _lab.training_curves({"phase_transitions": phase, "phase_transitions_summary": summary}, LABELS, {})
    assert fig["band"] is None and fig["marks"] == []
    assert "linear scale" in fig["axes"][3]["label"]  # a loss of 0 has no logarithm


def test_training_curves_with_nothing_to_draw_are_none(tables):
    cols = ["train_acc", "heldout_acc", "train_loss", "heldout_loss"]
    phase = tables["phase_transitions"].assign(**{c: np.nan for c in cols})
    assert _lab.training_curves({"phase_transitions": phase,
                                 "phase_transitions_summary": tables["phase_transitions_summary"]}, LABELS, {}) is None


# --- algorithmic branches ----------------------------------------------------------------------------------


def test_branch_cka_has_a_row_per_comparison_and_layer_with_its_chunks(tables):
    fig = build("branch_cka", tables)
    assert [g["label"] for g in fig["groups"]] == list(_lab._COMPARISONS.values())
    assert len(fig["rows"]) == 10 and all(len(r["chunks"]) == 3 for r in fig["rows"])
    ys = [r["y"] for r in fig["rows"]]
    assert ys == sorted(ys)
    between = fig["rows"][0]
    assert max(r["x"] for r in fig["rows"][:2]) < min(r["x"] for r in fig["rows"][2:])  # between seeds: lowest
    assert min(between["chunks"]) < between["x"] < max(between["chunks"])
    assert all(r["x"] <= fig["x_one"] for r in fig["rows"]) and fig["x_zero"] < between["x"]
    assert "steps 800 vs 900" in between["text"] and "p = 0.005" in between["text"]
    assert "n = 96 probe pairs" in fig["caption"] and "3 chunks" in fig["caption"]


def test_branch_cka_skips_missing_values_and_is_none_without_any(tables):
    rows = tables["algorithmic_branches"].copy()
    rows.loc[0, "cka"] = np.nan
    chunks = tables["algorithmic_branches_chunks"].copy()
    chunks.loc[chunks["comparison"] == "peak_other", "cka"] = np.nan
    fig = _lab.branch_cka({"algorithmic_branches": rows, "algorithmic_branches_chunks": chunks}, LABELS, {})
    assert len(fig["rows"]) == 9 and fig["rows"][-1]["chunks"] == []
    assert _lab.branch_cka({"algorithmic_branches": rows.assign(cka=np.nan), "algorithmic_branches_chunks": chunks},
                           LABELS, {}) is None


# --- memory ------------------------------------------------------------------------------------------------


def test_memory_endpoints_group_rows_by_curriculum_in_four_panels(tables):
    fig = build("memory_endpoints", tables)
    assert [g["label"] for g in fig["groups"]] == ["curriculum poetry>technical_documentation",
                                                   "curriculum technical_documentation>poetry"]
    assert len(fig["row_labels"]) == 4 and fig["groups"][0]["y"] < fig["row_labels"][0]["y"] < fig["groups"][1]["y"]
    assert len(fig["axes"]) == 4 and [a["start"] for a in fig["axes"]] == sorted(a["start"] for a in fig["axes"])
    loss_axis = fig["axes"][0]
    assert loss_axis["start"] <= fig["target"]["x"] <= loss_axis["end"]
    hollow = [p["title"] for p in fig["points"] if not p["filled"]]
    assert sum("held-out loss" in t for t in hollow) == 2  # seed 1 is not matched
    assert sum("lambda_min" in t and "not converged" in t for t in hollow) == 2
    [w0, *_] = fig["whiskered"]
    assert len(fig["whiskered"]) == 4 and w0["x_hi"] - w0["x"] == pytest.approx(w0["x"] - w0["x_lo"], rel=0.2)
    assert sum("poetry loss" in p["title"] or "technical_documentation loss" in p["title"]
               for p in fig["points"]) == 8
    assert [item["label"] for item in fig["legend"]] == ["poetry", "technical_documentation"]
    assert "n = 4 endpoints, 1658 held-out tokens" in fig["caption"]


def test_memory_endpoints_skip_missing_values(tables):
    memory = tables["memory"].copy()
    memory.loc[0, "heldout_loss"] = np.nan
    memory.loc[1, "lambda_min"] = np.nan
    memory.loc[1, "trace_stderr"] = np.nan
    fig = _lab.memory_endpoints({"memory": memory, "memory_domains": tables["memory_domains"]}, LABELS, {})
    assert len(fig["row_labels"]) == 3
    assert sum(p["x_lo"] is None for p in fig["whiskered"]) == 1
    assert _lab.memory_endpoints({"memory": memory.assign(heldout_loss=np.nan),
                                  "memory_domains": tables["memory_domains"]}, LABELS, {}) is None


def test_memory_cka_is_a_symmetric_matrix_with_each_curriculum_outlined(tables):
    fig = build("memory_cka", tables)
    assert len(fig["cells"]) == 12 and len(fig["diagonal"]) == 4 and len(fig["blocks"]) == 2
    fill = {(round(c["x"]), round(c["y"])): c["fill"] for c in fig["cells"]}
    assert all(fill[(x, y)] == fill[(y - fig["top"] + fig["x0"], x - fig["x0"] + fig["top"])] for x, y in fill)
    darkest = max(fig["cells"], key=lambda c: -sum(int(c["fill"][i:i + 2], 16) for i in (1, 3, 5)))
    assert "CKA 0.9" in darkest["title"] and darkest["text"] == "0.9"
    assert [b["label"] for b in fig["blocks"]] == ["poetry>technical_documentation", "technical_documentation>poetry"]
    assert [t["label"] for t in fig["axes"][1]["ticks"]] == ["seed 0", "seed 1"] * 2
    pairs = tables["memory_pairs"].copy()
    pairs.loc[0, "cka"] = np.nan
    assert len(_lab.memory_cka({"memory_pairs": pairs}, LABELS, {})["cells"]) == 10
    assert _lab.memory_cka({"memory_pairs": pairs.assign(cka=np.nan)}, LABELS, {}) is None


# --- symmetry ----------------------------------------------------------------------------------------------


def test_symmetry_orbits_put_distance_and_logit_change_side_by_side(tables):
    fig = build("symmetry_orbits", tables)
    assert [r["text"] for r in fig["row_labels"]] == ["MLP hidden units", "attention heads", "residual stream",
                                                      "all three"]
    assert len(fig["points"]) == 16
    left, right = fig["axes"]
    distance = [p for p in fig["points"] if p["x"] <= left["end"]]
    logits = [p for p in fig["points"] if p["x"] >= right["start"]]
    assert len(distance) == len(logits) == 8
    by_family = {p["title"].split(",")[0]: p["x"] for p in distance if ", draw 0" in p["title"]}
    assert by_family["mlp"] < by_family["heads"] < by_family["residual"] < by_family["all"]
    orbits = tables["symmetry_orbits"].copy()
    orbits.loc[0, "weight_norm"] = 0.0
    orbits.loc[1, "max_abs_dlogit"] = np.nan
    assert len(_lab.symmetry_orbits({"symmetry_orbits": orbits}, LABELS, {})["points"]) == 12


def test_symmetry_matching_draws_the_barrier_before_and_after(tables):
    fig = build("symmetry_matching", tables)
    assert [d["label"] for d in fig["dumbbells"]] == ["max − mean of ends", "max − chord"]
    for d in fig["dumbbells"]:
        before, after = d["ends"]
        assert (before["alignment"], after["alignment"]) == ("before", "after")
        assert after["x"] < before["x"] and before["y"] < after["y"]  # matching lowers the barrier
        assert len(before["chunks"]) == len(after["chunks"]) == 2
    assert "before 1.2 → after 0.3 nats" == fig["dumbbells"][0]["text"]
    before, after = fig["distance_points"]
    assert after["x"] < before["x"]
    assert "A = lab:tiny-modular@0 · B = lab:tiny-modular@1" in fig["caption"] and "n = 400" in fig["caption"]
    rows = tables["symmetry_matching"]
    one = rows[rows["alignment"] == "before"]
    assert [len(d["ends"]) for d in _lab.symmetry_matching({"symmetry_matching": one, "symmetry_matching_chunks":
                                                           tables["symmetry_matching_chunks"]}, LABELS, {})
            ["dumbbells"]] == [1, 1]
    assert _lab.symmetry_matching({"symmetry_matching": rows.assign(barrier=np.nan),
                                   "symmetry_matching_chunks": tables["symmetry_matching_chunks"]}, LABELS, {}) is None


# --- the instruments' real tables, and the report --------------------------------------------------------


def test_the_figures_draw_what_the_instruments_write_for_tiny_lab_runs(tmp_path, starter):
    from atlas.instruments import (measure_algorithmic_branches, measure_phase_transitions, measure_symmetry_orbits,
                                   order_transitions)
    from atlas.lab import train

    a, b = (load_model(str(train("tiny-modular", seed=s, out=tmp_path, progress=False).checkpoints[-1][1]),
                       device="cpu") for s in (0, 1))
    measured = measure_phase_transitions(a, None, fourier_k=2, progress=False)
    measured["phase_transitions_summary"] = order_transitions(measured["phase_transitions"])
    measured.update(measure_algorithmic_branches(a, starter, other=b, probes=24, chunks=3, permutations=19,
                                                 progress=False))
    measured.update(measure_symmetry_orbits(a, starter, other=b, permutations=2, points=3, chunks=2, progress=False))
    figs = {f["kind"]: f for f in figures_for(measured, LABELS, {})}
    assert list(figs) == ["training_curves", "branch_cka", "symmetry_orbits", "symmetry_matching"]
    steps = measured["phase_transitions"]["step"]
    assert len(figs["training_curves"]["series"][0]["points"]) == len(steps)
    assert len(figs["branch_cka"]["rows"]) == len(measured["algorithmic_branches"])
    for f in figs.values():
        assert all(a["ticks"] for a in f["axes"]) and "n = " in f["caption"], f["kind"]
        coords = re.findall(r"'(?:x|y|w|x_lo|x_hi)': (-?[\d.e+-]+|nan|inf)", repr(f))
        assert coords and all(math.isfinite(float(c)) for c in coords), f["kind"]


def _run(instrument, settings=None):
    return Run(instrument=instrument, instrument_version="1", model="lab:tiny-modular@0", model_revision="r",
               corpus="starter-v1", corpus_hash="sha256:abc", settings=settings or {}, settings_hash="s",
               device="cpu", dtype="float32", seed=0, started_at=utcnow(), ended_at=utcnow(), status="complete")


def test_the_report_draws_each_lab_figure_in_its_instruments_section(tmp_path, tables):
    store = Store(f"sqlite:///{tmp_path / 'atlas.db'}")
    other = {"other": "lab:tiny-modular@1"}
    for instrument, names, settings in (
            ("phase_transitions", ("phase_transitions", "phase_transitions_summary"), {}),
            ("algorithmic_branches", ("algorithmic_branches", "algorithmic_branches_chunks"), other),
            ("memory", ("memory", "memory_domains", "memory_pairs"), {}),
            ("symmetry_orbits", ("symmetry_orbits", "symmetry_matching", "symmetry_matching_chunks"), other)):
        store.write_run(_run(instrument, settings), {n: tables[n] for n in names})
    render_report(store, tmp_path / "site")
    index = (tmp_path / "site" / "figures.html").read_text(encoding="utf-8")
    for section, count, label in (("phase_transitions", 1, "training step λ"), ("algorithmic_branches", 1, "CKA"),
                                  ("memory", 2, "mean debiased CKA over layers"),
                                  ("symmetry_orbits", 2, "after: σ*(B), aligned to A")):
        start = index.index(f'<section id="{section}"')
        body = index[start:index.index("</section>", start)]
        svgs = re.findall(r"<svg.*?</svg>", body, re.S)
        assert len(svgs) == count and label in "".join(svgs), section
        assert "lab:tiny-modular@0" in svgs[0] and "n = " in svgs[0] and "nan" not in "".join(svgs), section
    assert "<tspan font-weight=\"bold\">accuracy (top-1)</tspan>" in index


def test_a_summary_row_with_a_capped_ratio_says_so(tables):
    summary = tables["phase_transitions_summary"].copy()
    summary.loc[summary["order_parameter"] == "heldout_acc", ["jump_ratio", "capped"]] = [1e6, True]
    fig = _lab.training_curves({"phase_transitions": tables["phase_transitions"],
                                "phase_transitions_summary": summary}, LABELS, {})
    assert "jump ratio 1e6 (capped)" in fig["band"]["label"]


def test_every_lab_kind_is_registered_with_tables_that_have_schemas():
    from atlas._schema import schema_for

    for kind in KINDS:
        for table in FIGURES[kind].tables:
            assert schema_for(table).instrument in {"phase_transitions", "algorithmic_branches", "memory",
                                                    "symmetry_orbits"}, (kind, table)
