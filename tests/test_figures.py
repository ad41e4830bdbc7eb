"""The report's figures as geometry (atlas._figures): scales, the forest plot, a prediction's history and the
instrument figures, checked on the coordinates, without a browser."""

import math
from datetime import datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas._figures import _base, _instruments as figures
from atlas._figures import (FIGURES, OUTCOME_COLOURS, Scale, asinh_scale, figure, figures_for, forest, history,
                            linear_scale, log_scale, scale_kind, statistic_kind)
from atlas._report import seed_reference
from atlas._verdict import SCALES, Criterion

LABELS = {"model": "tiny-llama", "corpus": "starter-v1", "run": "0123456789abcdef", "settings": {"other": "tiny-b"}}


def verdict(prediction="P", outcome="supported", effect=0.5, lo=0.2, hi=0.8, statistic="Spearman rho(layer, x)",
            threshold=0.0, **kw):
    """A verdict as the figures read it, its criterion as stored before criteria declared a scale."""
    return {"id": 1, "prediction": prediction, "version": "v1", "model": "m", "corpus": "c", "profile": "quick",
            "outcome": outcome, "effect": effect, "ci_low": lo, "ci_high": hi, "n": 12,
            "criterion": {"statistic": statistic, "direction": ">", "threshold": threshold},
            "href": f"predictions/{prediction}.html", "created_at": datetime(2026, 1, 1), **kw}


def declared(scale, prediction="P", outcome="supported", effect=0.5, lo=0.2, hi=0.8, statistic="s", direction=">",
             threshold=0.0, **kw):
    """A verdict whose criterion declares its scale, as a Criterion stores it."""
    criterion = Criterion(statistic, direction, threshold, scale=scale).as_dict()
    return verdict(prediction, outcome, effect, lo, hi, **kw) | {"criterion": criterion}


# --- scales ---------------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=6))
def test_linear_scale_covers_its_values_with_round_ticks_far_enough_apart(values):
    scale = linear_scale(values, 100, 900)
    assert scale.lo <= min(values) and scale.hi >= max(values)
    ticks = scale.ticks(min_gap=44)
    assert len(ticks) >= 2
    ats = [t["at"] for t in ticks]
    assert ats == sorted(ats) and all(b - a >= 44 - 1e-6 for a, b in zip(ats, ats[1:], strict=False))
    assert all(100 - 1e-6 <= a <= 900 + 1e-6 for a in ats)


@given(st.floats(min_value=1e-3, max_value=1e3))
def test_log_scale_puts_equal_factors_at_equal_distances(v):
    scale = log_scale([1e-3, 1e4], 0, 1000)
    assert scale(2 * v) - scale(v) == pytest.approx(scale(4 * v) - scale(2 * v), abs=1e-6)


@given(st.floats(min_value=1e-4, max_value=100))
def test_symmetric_asinh_scale_mirrors_sign_around_zero(v):
    scale = asinh_scale([-100, 1e-4, 100], 0, 1000, symmetric=True)
    assert scale(0) == pytest.approx(500)
    assert scale(v) - 500 == pytest.approx(500 - scale(-v), abs=1e-6)
    assert scale(v) > scale(v / 2) > 500  # monotone


def test_asinh_scale_is_linear_near_zero_and_logarithmic_beyond_its_width():
    scale = asinh_scale([-1000, 1000], 0, 1000, width=1.0)
    # within ±width: nearly equal steps for equal differences
    assert scale(0.1) - scale(0) == pytest.approx(scale(0.2) - scale(0.1), rel=0.02)
    # far beyond: equal factors give nearly equal steps
    assert scale(200) - scale(100) == pytest.approx(scale(400) - scale(200), rel=0.01)
    assert {t["label"] for t in scale.ticks()} >= {"0", "100", "−100"}


def test_asinh_width_stays_within_four_decades_of_the_largest_value():
    assert asinh_scale([1e-12, 50.0], 0, 100).width == pytest.approx(1e-3)
    assert asinh_scale([0.02, 50.0], 0, 100).width == pytest.approx(0.01)


def test_values_beyond_a_fixed_scale_are_clamped_and_flagged():
    scale = Scale("linear", -1.0, 1.0, 0, 200)
    assert scale(3.0) == 200 and scale(-3.0) == 0 and scale.clipped(3.0) and not scale.clipped(0.5)


# --- the forest plot --------------------------------------------------------------------------------------


@pytest.mark.parametrize("statistic, kind", [
    ("Spearman rho(layer, coupling), variant all", "correlation"),
    ("Spearman rho(layer coupling (variant all), layer mean delta-PPL)", "correlation"),
    ("highest / lowest domain perplexity", "ratio"),
    ("PPL_academic(opt-125m) / PPL_academic(gpt2)", "ratio"),
    ("min over other domains of log(PPL_B/PPL_A) minus that of academic_abstract", "difference"),
    ("coupling(4) - mean(coupling(3), coupling(5)), variant all", "difference"),
    ("mean delta-PPL of single-head ablations, layers 9-10 minus layers 0-2", "difference"),
    ("var over domains of log PPL: tuned minus base", "difference"),
])
def test_statistic_kinds_of_the_seed_predictions(statistic, kind):
    assert statistic_kind({"statistic": statistic}) == kind


def test_forest_draws_every_reached_verdict_on_its_kinds_scale():
    verdicts = [
        verdict("rho", "supported", 0.5, 0.2, 0.8),
        verdict("ratio", "refuted", 1.01, 1.0, 1.02, statistic="highest / lowest domain perplexity", threshold=2.0),
        verdict("diff", "inconclusive", -0.01, -0.03, 0.02, statistic="a minus b"),
        verdict("nothing", "not_run", None, None, None),
    ]
    fig = forest(verdicts)
    groups = {g["kind"]: g for g in fig["groups"]}
    assert set(groups) == {"correlation", "ratio", "difference"}
    assert [r["prediction"] for g in fig["groups"] for r in g["rows"]] == ["rho", "ratio", "diff"]  # not run: out
    rho = groups["correlation"]["rows"][0]
    assert rho["x_threshold"] == pytest.approx((fig["x0"] + fig["x1"]) / 2)  # 0 is the middle of [−1, 1]
    assert rho["x_lo"] < rho["x_effect"] < rho["x_hi"] and rho["colour"] == OUTCOME_COLOURS["supported"]
    assert rho["href"] == "predictions/rho.html"
    ratio = groups["ratio"]["rows"][0]
    assert ratio["x_hi"] < ratio["x_threshold"] and "log" in groups["ratio"]["title"]  # CI below 2: refuted
    diff = groups["difference"]["rows"][0]
    assert diff["x_lo"] < diff["x_threshold"] < diff["x_hi"] and "asinh" in groups["difference"]["title"]
    assert len(fig["axes"]) == 3 and all(a["ticks"] for a in fig["axes"])
    tops = [g["y"] for g in fig["groups"]]
    assert tops == sorted(tops) and fig["height"] > max(r["y"] for g in fig["groups"] for r in g["rows"])


def test_forest_of_a_verdict_without_ci_draws_the_effect_alone():
    [row] = forest([verdict(outcome="inconclusive", effect=1.0, lo=None, hi=None)])["groups"][0]["rows"]
    assert row["x_lo"] is None and row["x_effect"] is not None and "no CI" in row["value"]


def test_forest_is_none_when_nothing_reached_a_verdict():
    assert forest([verdict(outcome="not_run", effect=None, lo=None, hi=None)]) is None


def test_a_ratio_with_a_non_positive_value_falls_back_to_a_linear_scale():
    fig = forest([verdict(effect=0.5, lo=-0.1, hi=1.0, statistic="a / b", threshold=1.0)])
    assert "linear" in fig["groups"][0]["title"]


def test_the_axis_is_the_scale_the_criterion_declares_not_a_guess_from_its_words():
    says_ratio = declared("difference", effect=0.5, lo=0.2, hi=0.8, statistic="highest / lowest domain perplexity")
    assert statistic_kind(says_ratio["criterion"]) == "ratio" and scale_kind(says_ratio["criterion"]) == "difference"
    [group] = forest([says_ratio])["groups"]
    assert group["kind"] == "difference" and "asinh" in group["title"]
    says_rho = declared("log_ratio", effect=0.5, lo=0.2, hi=0.8, statistic="Spearman rho of log(a / b)")
    [group] = forest([says_rho])["groups"]
    assert group["kind"] == "log_ratio" and "linear" in group["title"]


def test_one_group_per_declared_scale_in_a_fixed_order():
    fig = forest([declared(s, prediction=s, effect=0.5, lo=0.4, hi=0.6) for s in reversed(SCALES)])
    assert [g["kind"] for g in fig["groups"]] == ["correlation", "share", "ratio", "log_ratio", "difference"]
    assert set(SCALES) == {g["kind"] for g in fig["groups"]}  # every scale a criterion can declare has an axis


def test_a_share_near_one_is_on_the_unit_interval_linear_not_asinh():
    fig = forest([declared("share", effect=0.97, lo=0.95, hi=0.99, threshold=0.0)])
    [group] = fig["groups"]
    assert "linear" in group["title"] and "asinh" not in group["title"]
    ticks = [t["value"] for t in group["axis"]["ticks"]]
    assert min(ticks) == pytest.approx(0.0) and max(ticks) == pytest.approx(1.0)
    [row] = group["rows"]
    width = fig["x1"] - fig["x0"]
    assert row["x_effect"] == pytest.approx(fig["x0"] + 0.97 * width)  # 0.97 sits 97% of the way along
    assert row["x_hi"] - row["x_lo"] == pytest.approx(0.04 * width)  # linear: the CI keeps its width
    # a CI reaching below 0 widens the axis down to it, never below −1 (beyond: clamped and flagged)
    [group] = forest([declared("share", effect=0.3, lo=-0.35, hi=0.8)])["groups"]
    assert -1.0 <= min(t["value"] for t in group["axis"]["ticks"]) <= -0.35
    [row] = forest([declared("share", effect=0.3, lo=-4.0, hi=0.8)])["groups"][0]["rows"]
    assert row["clipped"] and row["x_lo"] == pytest.approx(350)


def test_a_log_ratio_is_linear_and_centred_on_zero():
    fig = forest([declared("log_ratio", effect=1.2, lo=0.4, hi=2.0)])
    [row] = fig["groups"][0]["rows"]
    assert row["x_threshold"] == pytest.approx((fig["x0"] + fig["x1"]) / 2)
    assert row["x_effect"] - row["x_lo"] == pytest.approx(row["x_hi"] - row["x_effect"])  # linear


@pytest.mark.parametrize("scale, threshold", [("correlation", 0.3), ("share", 0.5), ("ratio", 2.0),
                                               ("log_ratio", 0.0), ("difference", -0.1)])
@pytest.mark.parametrize("direction", [">", ">=", "<", "<="])
def test_the_claimed_side_of_the_threshold_is_shaded(scale, threshold, direction):
    fig = forest([declared(scale, effect=1.0, lo=0.5, hi=1.5, direction=direction, threshold=threshold)])
    [row] = fig["groups"][0]["rows"]
    start, end = row["claim"]["x"], row["claim"]["x"] + row["claim"]["w"]
    if direction.startswith(">"):  # larger values: from the threshold to the right end
        assert (start, end) == (pytest.approx(row["x_threshold"]), pytest.approx(fig["x1"]))
    else:
        assert (start, end) == (pytest.approx(fig["x0"]), pytest.approx(row["x_threshold"]))
    assert row["claim"]["w"] > 0
    supported = row["x_lo"] >= row["x_threshold"] if direction.startswith(">") else row["x_hi"] <= row["x_threshold"]
    assert supported == (start <= row["x_lo"] and row["x_hi"] <= end)  # a supporting CI lies inside the band
    assert [item["label"] for item in fig["legend"]][-1] == "claimed side"
    [panel] = history([declared(scale, effect=1.0, lo=0.5, hi=1.5, direction=direction, threshold=threshold)])
    [claim] = panel["claims"]
    y_threshold = pytest.approx(float(panel["threshold"].split()[0].split(",")[1]), abs=0.06)  # drawn to 0.1 px
    if direction.startswith(">"):  # larger values: up the page, from the threshold to the top
        assert (claim["y"], claim["y"] + claim["h"]) == (pytest.approx(panel["y_top"]), y_threshold)
    else:
        assert (claim["y"], claim["y"] + claim["h"]) == (y_threshold, pytest.approx(panel["y_bottom"]))


def test_a_criterion_stored_without_a_scale_still_plots_by_the_old_heuristic():
    old = [verdict("ratio", effect=1.5, lo=1.2, hi=1.9, statistic="highest / lowest domain perplexity", threshold=2.0),
           verdict("rho", effect=0.5, lo=0.2, hi=0.8)]
    old[0]["criterion"]["direction"] = "<"
    unknown = verdict("later", statistic="a minus b")
    unknown["criterion"]["scale"] = "a scale of a later Atlas"
    fig = forest([*old, unknown])
    assert "scale" not in old[0]["criterion"]
    assert [(g["kind"], [r["prediction"] for r in g["rows"]]) for g in fig["groups"]] == [
        ("correlation", ["rho"]), ("ratio", ["ratio"]), ("difference", ["later"])]
    ratio = fig["groups"][1]["rows"][0]
    assert ratio["claim"]["x"] == fig["x0"] and ratio["x_hi"] < ratio["x_threshold"]  # '<' 2: shaded to the left
    assert history(old[:1])[0]["axes"][0]["label"] == "ratio"


def test_long_model_names_are_never_cut():
    pair = "smollm2-135m-instruct vs lab:finetune-smollm2@0-with-a-long-recipe-name"
    short, long = (declared("difference", prediction=p, model=m, corpus="domains-v1[:24/domain]")
                   for p, m in (("short", "gpt2"), ("long", pair)))
    rows = forest([short, long])["groups"][0]["rows"]
    assert rows[0]["lines"] == ["supported · gpt2 · domains-v1[:24/domain] · quick"]
    lines = rows[1]["lines"]
    assert lines[0] == "supported · domains-v1[:24/domain] · quick" and len(lines) >= 2
    assert " ".join(lines[1:]) == pair and "…" not in "".join(lines)
    assert all(len(line) <= 57 for line in lines)
    extra = 12 * (len(lines) - 1)  # a line of text more per line of model name
    assert rows[1]["bottom"] - rows[1]["top"] == pytest.approx(rows[0]["bottom"] - rows[0]["top"] + extra)
    assert rows[1]["top"] >= rows[0]["bottom"]  # the taller row pushes the next down


def test_history_has_a_panel_per_model_corpus_and_profile_and_marks_new_versions():
    t0 = datetime(2026, 1, 1)
    rows = [verdict(created_at=t0 + timedelta(days=i), version="v1" if i < 2 else "v2", effect=0.1 * i,
                    lo=0.1 * i - 0.2, hi=0.1 * i + 0.2) for i in range(4)]
    rows.append(verdict(corpus="other", created_at=t0))
    panels = history(rows)
    assert [p["title"] for p in panels] == ["m · c · profile quick", "m · other · profile quick"]
    first = panels[0]
    assert len(first["points"]) == 4 and [c["label"] for c in first["changes"]] == ["vv2"]
    ys = [p["y"] for p in first["points"]]
    assert ys == sorted(ys, reverse=True)  # rising effect: up the page
    xs = [p["x"] for p in first["points"]]
    assert xs == sorted(xs) and first["changes"][0]["x"] == pytest.approx((xs[1] + xs[2]) / 2)


# --- instrument figures ----------------------------------------------------------------------------------


def test_every_figure_labels_model_corpus_and_n_and_names_its_axes(instrument_tables):
    tables = {**instrument_tables, "perplexity_domains": pd.DataFrame(
        {"domain": ["poetry", "spanish"], "n": [3, 3], "n_tokens": [90, 80], "ppl": [40.0, 70.0],
         "ci_low": [35.0, 60.0], "ci_high": [45.0, 80.0], "bits_per_byte": [1.2, 1.5]}),
        "coupling": pd.DataFrame({"layer": [0, 1, 2], "variant": ["seed_flattened"] * 3, "coupling": [0.41, 0.52, 0.47],
                                  "ci_low": [0.4, 0.5, 0.45], "ci_high": [0.42, 0.55, 0.5], "n_passages": [3] * 3})}
    figs = figures_for(tables, LABELS, seed_reference())
    assert [f["kind"] for f in figs] == list(FIGURES)
    for f in figs:
        assert "tiny-llama" in f["caption"] and "n = " in f["caption"], f["kind"]
        assert f["kind"] == "interpolation_curve" or "starter-v1" in f["caption"], f["kind"]
        assert all(a["ticks"] for a in f["axes"]), f["kind"]
        assert any(a["label"] for a in f["axes"]), f["kind"]


def test_figures_for_draws_only_what_the_run_has(instrument_tables):
    assert [f["kind"] for f in figures_for({"gradient": instrument_tables["gradient"]}, LABELS, {})] == [
        "gradient_bars"]
    assert figures_for({"ablation": instrument_tables["ablation"]}, LABELS, {}) == []  # needs ablation_layers too


def test_a_new_figure_is_one_registered_function(monkeypatch):
    monkeypatch.setattr(_base, "FIGURES", dict(FIGURES))
    figure("toy_count", "toy")(lambda tables, labels, seed: {"n": len(tables["toy"])})
    [fig] = _base.figures_for({"toy": pd.DataFrame({"step": [1, 2]})}, LABELS, {})
    assert fig == {"kind": "toy_count", "n": 2}


def test_ablation_heatmap_has_a_cell_per_head_coloured_around_zero(instrument_tables):
    fig = figures.ablation_heatmap(instrument_tables, LABELS, {})
    assert len(fig["cells"]) == 12 and len(fig["bars"]) == 3
    fills = {c["title"].split(":")[0]: c["fill"] for c in fig["cells"]}
    assert fills["layer 0 head 0"] == "#f7f7f7"  # ΔPPL 0: white
    assert fills["layer 2 head 0"] == "#b2182b"  # the largest |ΔPPL| (1.0), positive: saturated red
    assert fills["layer 0 head 3"] == _base.diverging(-0.9, 1.0) and fills["layer 0 head 3"].startswith("#")
    ys = [b["y"] for b in fig["bars"]]
    assert ys == sorted(ys)  # layer 0 at the top, as in the heatmap
    for b in fig["bars"]:
        assert b["x_lo"] < b["x"] < b["x_hi"]  # CI whiskers around the mean
    assert fig["bars"][0]["x_hi"] < fig["zero"] < fig["bars"][2]["x_lo"]  # layer 0 below 0, layer 2 above
    assert "256 scored tokens" in fig["caption"] and "baseline PPL 50" in fig["caption"]


def test_ablation_heatmap_says_how_the_gradient_proxy_ranks_heads_against_their_ablation(instrument_tables):
    from scipy.stats import spearmanr

    heads = instrument_tables["ablation"]
    fig = figures.ablation_heatmap(instrument_tables, LABELS, {})
    rho = spearmanr(heads["importance"], heads["delta_ppl"]).statistic
    assert f"Spearman rho(|dL/d gate|, ΔPPL) {_base._fmt(float(rho))} over {len(heads)} heads" in fig["caption"]
    reversed_proxy = {**instrument_tables, "ablation": heads.assign(importance=-heads["delta_ppl"])}
    assert "Spearman rho(|dL/d gate|, ΔPPL) −1 over" in figures.ablation_heatmap(reversed_proxy, LABELS, {})["caption"]


def test_hessian_spectrum_puts_both_ends_and_the_density_on_one_axis(instrument_tables):
    fig = figures.hessian_spectrum(instrument_tables, LABELS, {})
    assert len(fig["points"]) == 8
    assert {p["colour"] for p in fig["points"]} == {"#b2182b", "#2166ac"}
    assert sum(not p["filled"] for p in fig["points"]) == 2  # index 1 of each block is not converged
    by_block: dict[str, float] = {}
    for c in fig["density"]["cells"]:
        by_block[c["block"]] = by_block.get(c["block"], 0.0) + c["weight"]
    assert by_block == pytest.approx({"layer.0.attention": 1.0, "layer.1.attention": 1.0})
    eig_axis, _, density_axis, _ = fig["axes"]
    assert [t["label"] for t in eig_axis["ticks"]] == [t["label"] for t in density_axis["ticks"]]


def test_hessian_without_density_rows_draws_the_eigenvalues_alone(instrument_tables):
    eig = instrument_tables["hessian"][instrument_tables["hessian"]["kind"] == "eigenvalue"]
    fig = figures.hessian_spectrum({"hessian": eig}, LABELS, {})
    assert fig["density"] is None and len(fig["axes"]) == 2


def test_gradient_bars_have_one_axis_per_quantity(instrument_tables):
    fig = figures.gradient_bars(instrument_tables, LABELS, {})
    norm, entropy = fig["panels"]
    assert [b["w"] for b in norm["bars"]] == sorted(b["w"] for b in norm["bars"])  # 1.5 < 2.0 < 2.5
    assert "nats" in entropy["axis"]["label"] and norm["axis"]["ticks"][0]["label"] == "0"
    assert "7 passages, 1490 scored tokens" in fig["caption"]


def test_interpolation_marks_the_barrier_where_it_lies(instrument_tables):
    fig = figures.interpolation_curve(instrument_tables, LABELS, {})
    chord, mean_ends = fig["marks"][1], fig["marks"][0]
    x_mid = (fig["axes"][0]["start"] + fig["axes"][0]["end"]) / 2
    assert chord["x"] == pytest.approx(x_mid) and chord["y_max"] < chord["y_ref"]  # the peak is above the chord
    assert "1.1 nats at t = 0.5" in chord["label"] and mean_ends["dashed"] and not chord["dashed"]
    assert "B = tiny-b" in fig["caption"]


def test_perplexity_bars_start_at_zero_with_whiskers_and_seed_ticks():
    domains = pd.DataFrame({"domain": ["poetry", "spanish"], "n": [3, 3], "n_tokens": [90, 80], "ppl": [40.0, 70.0],
                            "ci_low": [35.0, 60.0], "ci_high": [45.0, 80.0], "bits_per_byte": [1.2, 1.5]})
    fig = figures.perplexity_bars({"perplexity_domains": domains}, LABELS, seed_reference())
    [axis] = fig["axes"]
    assert axis["ticks"][0]["label"] == "0" and axis["ticks"][0]["at"] == pytest.approx(fig["x0"])
    poetry, spanish = fig["bars"]
    assert spanish["w"] / poetry["w"] == pytest.approx(70 / 40)
    assert poetry["x_lo"] < fig["x0"] + poetry["w"] < poetry["x_hi"]
    assert poetry["ref"] == 58.6 and "seed 58.6" in poetry["text"]


def _coupling(n_layers, variants=("row_centred",)):
    return pd.DataFrame([{"layer": i, "variant": v, "coupling": 0.5 + 0.01 * i, "ci_low": 0.49 + 0.01 * i,
                          "ci_high": 0.51 + 0.01 * i, "n_passages": 4} for v in variants for i in range(n_layers)])


def test_coupling_uses_relative_depth_when_depths_differ():
    seed = seed_reference()  # GPT-2: 12 layers
    fig = figures.coupling_lines({"coupling": _coupling(30)}, LABELS, seed)
    assert fig["relative"] and "relative depth" in fig["axes"][0]["label"]
    # first and last layers meet the seed's first and last
    assert fig["points"][0]["x"] == pytest.approx(fig["seed_points"][0]["x"])
    assert fig["points"][-1]["x"] == pytest.approx(fig["seed_points"][-1]["x"])
    assert fig["points"][15]["x"] == pytest.approx(fig["points"][0]["x"] + 15 / 29 * (
        fig["points"][-1]["x"] - fig["points"][0]["x"]))
    assert all(p["y_lo"] > p["y"] > p["y_hi"] for p in fig["points"])  # whiskers around each point


def test_coupling_keeps_layer_index_at_equal_depth_and_names_its_variant():
    fig = figures.coupling_lines({"coupling": _coupling(12, ("row_centred_no_sink", "row_centred"))}, LABELS,
                                 seed_reference())
    assert not fig["relative"] and fig["axes"][0]["label"] == "layer"
    assert [p["x"] for p in fig["points"]] == pytest.approx([p["x"] for p in fig["seed_points"]])
    assert fig["variant"] == "row_centred" and "variant row_centred" in fig["caption"]
    fig = figures.coupling_lines({"coupling": _coupling(12, ("row_centred", "seed_flattened"))}, LABELS, {})
    assert fig["variant"] == "seed_flattened" and fig["seed_points"] == []


def test_tick_labels_are_short_and_use_a_true_minus():
    assert [_base._fmt(v) for v in (0, 1e-5, -2.5e-5, 0.25, 1234.4, 25000)] == [
        "0", "1e−5", "−2.5e−5", "0.25", "1234", "2.5e4"]
    assert not any(math.isnan(t["at"]) for t in log_scale([0.5, 3], 0, 100).ticks())
