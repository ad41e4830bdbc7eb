"""The curvature and multi-task geometry instruments' figures (atlas/_figures/_curvature.py) as geometry: a cell per
unit, colours around zero, CI whiskers around their points, missing values tolerated; then on real instrument output
of the tiny GPT-2, drawn through the report's template."""

import math
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from _corpora import first_domains
from jinja2 import Environment, PackageLoader, select_autoescape

from atlas import Store, run_instrument, validate_table
from atlas._figures import _curvature as figures
from atlas._figures import diverging, figures_for
from atlas._figures._base import _NEG, _POS

LABELS = {"model": "tiny-llama", "corpus": "starter-v1", "run": "0123456789abcdef", "settings": {"steps": 2}}
KINDS = ["smoothness_domains", "tightness_blocks", "elasticity_shares", "stiffness_recovery", "hessian_coupling_heads"]
TABLES = ["smoothness", "smoothness_gram", "tightness", "tightness_mgda", "tightness_pairs", "elasticity",
          "elasticity_share", "stiffness", "stiffness_radii", "hessian_coupling", "hessian_coupling_layers"]


def _rgb(fill: str) -> tuple[int, int, int]:
    return tuple(int(fill[k:k + 2], 16) for k in (1, 3, 5))


def _around(dot: dict, axis: str) -> bool:
    lo, hi = dot[f"{axis}_lo"], dot[f"{axis}_hi"]
    return min(lo, hi) <= dot[axis] <= max(lo, hi) and lo != hi


def _texts(fig: dict) -> list[str]:
    return [t["text"] for t in fig["texts"]]


def _with(tables: dict, name: str, **columns) -> dict:
    """``tables`` with some columns of table ``name`` replaced (a value per row, or one for all)."""
    return {**tables, name: tables[name].assign(**columns)}


@pytest.mark.parametrize("table", TABLES)
def test_the_constructed_tables_match_their_schemas(instrument_tables, table):
    validate_table(table, instrument_tables[table])


def test_smoothness_draws_each_domain_with_whiskers_a_cell_per_layer_and_per_passage_pair(instrument_tables):
    fig = figures.smoothness_domains(instrument_tables, LABELS, {})
    cosines = [d for d in fig["dots"] if "mean cosine" in d["title"]]
    assert [d["title"].split(":")[0] for d in cosines] == ["spanish", "poetry"]  # the model block, in table order
    assert all(_around(d, "x") for d in cosines)
    assert cosines[0]["x"] > cosines[1]["x"]  # 0.6 right of −0.2
    noise = [d for d in fig["dots"] if "B_simple" in d["title"]]
    assert len(noise) == 1 and _around(noise[0], "x")  # poetry's B_simple is undefined (signal <= 0) ...
    assert any(t.startswith("undefined: signal ≤ 0") for t in _texts(fig))  # ... and says so
    layer_cells = [c for c in fig["cells"] if "layer." in c["title"]]
    assert len(layer_cells) == 2 * 2  # 2 domains x layer.0, layer.1 (the model block is the dots)
    pair_cells = [c for c in fig["cells"] if "cos(g[" in c["title"]]
    assert len(pair_cells) == 2 * 6  # 3 passages: 6 off-diagonal cells per domain, both triangles
    spanish = [c for c in pair_cells if c["title"].startswith("spanish")]
    poetry = [c for c in pair_cells if c["title"].startswith("poetry")]
    assert all(_rgb(c["fill"])[0] > _rgb(c["fill"])[2] for c in spanish)  # aligned: red
    assert all(_rgb(c["fill"])[2] > _rgb(c["fill"])[0] for c in poetry)  # conflicting: blue
    assert "spanish: cos(g[spanish-0], g[spanish-1]) = 0.25" in [c["title"] for c in spanish]  # 0.5 / sqrt(2 * 2)
    assert [a["label"] for a in fig["legends"][0]["labels"]] == ["−1", "0", "1"]


def test_smoothness_whisker_is_open_where_the_noise_scale_is_unbounded_above(instrument_tables):
    tables = _with(instrument_tables, "smoothness", b_simple_ci_high=None)
    [dot] = [d for d in figures.smoothness_domains(tables, LABELS, {})["dots"] if "B_simple" in d["title"]]
    assert dot["open_hi"] and not dot["open_lo"] and dot["x_hi"] == 960  # runs to the axis end, uncapped
    assert "∞]" in dot["title"]


def test_tightness_orders_blocks_and_draws_cosines_shares_and_weights(instrument_tables):
    fig = figures.tightness_blocks(instrument_tables, LABELS, {})
    rows = [t["text"] for t in fig["texts"] if t["cls"] == "row"]
    assert rows == ["model", "layer.0", "layer.1", "layer.10"]  # by layer number, not by name
    means = [d for d in fig["dots"] if "mean cosine" in d["title"]]
    least = [d for d in fig["dots"] if "least cosine" in d["title"]]
    assert len(means) == len(least) == 4 and all(lo["x"] < m["x"] for lo, m in zip(least, means, strict=True))
    assert all(lo["fill"] == "#fff" for lo in least)  # hollow: the least pair
    assert "1 of 3" in _texts(fig) and "undefined (mean gradient 0)" in _texts(fig)  # layer.1's ratio is null
    matrix = [c for c in fig["cells"] if c["title"].startswith("cos(G[")]
    assert len(matrix) == 6  # 3 domains, both triangles, no diagonal
    conflicting = [c for c in matrix if c["title"].endswith("= −0.2")]
    assert len(conflicting) == 2 and all(_rgb(c["fill"])[2] > _rgb(c["fill"])[0] for c in conflicting)
    weights = [c for c in fig["cells"] if ": weight " in c["title"]]
    assert len(weights) == 4 * 3
    assert all(c["fill"] == "#f2f0f7" for c in weights if c["title"].endswith("weight 0"))  # light at 0
    assert "n = 3 domains" in fig["caption"]


def test_elasticity_draws_the_share_with_its_ci_and_says_when_nothing_was_forgotten(instrument_tables):
    fig = figures.elasticity_shares(instrument_tables, LABELS, {})
    [share] = [d for d in fig["dots"] if "elastic share" in d["title"]]  # spanish's is null
    assert _around(share, "x") and share["title"].endswith("0.5 [0.3, 0.7]")
    assert any(t.startswith("undefined: tuning forgot nothing") for t in _texts(fig))
    forgetting = [d for d in fig["dots"] if "forgetting" in d["title"]]
    assert len(forgetting) == 4 and sum(d["fill"] == "#fff" for d in forgetting) == 2  # ring: plain, dot: EWC
    changes = [d for d in fig["dots"] if "loss change" in d["title"]]
    assert len(changes) == 2 * 3 * 2  # 2 tuned domains x 3 domains x 2 penalties
    assert "poetry → spanish" in _texts(fig) and "poetry → poetry (tuned)" in _texts(fig)
    assert "192 held-out tokens" in fig["caption"]  # 3 domains of 64, each counted once however many tunings


def test_elasticity_marks_a_share_beyond_its_axis(instrument_tables):
    tables = _with(instrument_tables, "elasticity_share", elastic_share=[7.0, None], ci_high=[9.0, None],
                   ci_low=[5.0, None])
    [share] = [d for d in figures.elasticity_shares(tables, LABELS, {})["dots"] if "elastic share" in d["title"]]
    assert share["clipped"] and share["open_hi"] and share["open_lo"] and "7 [5, 9]" in share["title"]


def test_stiffness_draws_recovery_against_radius_with_whiskers_and_each_direction(instrument_tables):
    fig = figures.stiffness_recovery(instrument_tables, LABELS, {})
    recovered = [d for d in fig["dots"] if "of the loss rise recovered" in d["title"]]
    returned = [d for d in fig["dots"] if "of the push the weights undid" in d["title"]]
    assert len(recovered) == len(returned) == 2  # radii 0.1 and 0.2: radius 0 has no rise
    assert all(_around(d, "y") for d in recovered)
    assert recovered[0]["x"] < recovered[1]["x"]
    singles = [d for d in fig["dots"] if ", direction " in d["title"] and "recovered" in d["title"]]
    assert len(singles) == 4
    assert [t for t in _texts(fig) if t == "no rise"] == ["no rise"]  # radius 0
    [panel_a, panel_b] = [a for a in fig["axes"] if a["orient"] == "y"]
    assert panel_a["label"].startswith("share") and panel_b["label"] == "rise (nats)"
    levels = {t["text"]: t["y"] for t in fig["texts"] if "(elastic)" in t["text"] or "(plastic)" in t["text"]}
    assert levels["stiff (elastic)"] < levels["flexible (plastic)"]  # 1 above 0
    assert "2 steps" in fig["caption"]


def test_stiffness_pins_shares_beyond_the_axis_to_its_edge(instrument_tables):
    tables = _with(instrument_tables, "stiffness_radii", recovered=[None, 12.0, 0.55],
                   recovered_ci_high=[None, 22.0, 0.6])
    fig = figures.stiffness_recovery(tables, LABELS, {})
    [far] = [d for d in fig["dots"] if d["title"].startswith("radius 0.1: 12 [")]
    assert far["clipped"] and far["open_hi"]
    assert far["y"] == min(a["start"] for a in fig["axes"] if a["orient"] == "y")  # the top of the share axis


def test_hessian_coupling_has_a_cell_per_pair_of_heads_coloured_from_white_at_zero(instrument_tables):
    tables = _with(instrument_tables, "hessian_coupling",
                   coupling=[0.0] + list(instrument_tables["hessian_coupling"]["coupling"][1:]))
    fig = figures.hessian_coupling_heads(tables, LABELS, {})
    pairs = [c for c in fig["cells"] if ": c = " in c["title"]]
    diagonal = [c for c in fig["cells"] if "diagonal" in c["title"]]
    assert len(pairs) == 2 * 12 and len(diagonal) == 2 * 4  # 4 heads: 12 ordered pairs and 4 diagonal blocks
    white = "#%02x%02x%02x" % (247, 247, 247)
    assert [c["fill"] for c in pairs if c["title"].startswith("layer 0, heads 0 and 1:")] == [white]
    top = max(instrument_tables["hessian_coupling"]["coupling"])
    assert diverging(top, top) == "#%02x%02x%02x" % _POS
    assert sum(c["fill"] == "#%02x%02x%02x" % _POS for c in pairs) == 2  # the largest, both triangles
    legend = fig["legends"][0]
    assert legend["labels"][0]["label"] == "0" and legend["steps"][0]["fill"] != "#%02x%02x%02x" % _NEG
    means = [d for d in fig["dots"] if "mean c" in d["title"]]
    assert len(means) == 2 and all(_around(d, "y") for d in means)
    assert "n = 4 probes per head" in fig["caption"] and "KV group" not in fig["title"]


def test_hessian_coupling_names_kv_groups_under_grouped_query_attention(instrument_tables):
    tables = _with(_with(instrument_tables, "hessian_coupling", heads_per_unit=3), "hessian_coupling_layers",
                   heads_per_unit=3)
    fig = figures.hessian_coupling_heads(tables, LABELS, {})
    assert "KV group" in fig["title"] and "3 query heads per KV group" in fig["caption"]


@pytest.mark.parametrize("kind, table, column", [
    ("smoothness_domains", "smoothness", ["mean_cosine", "b_simple"]),
    ("tightness_blocks", "tightness", ["mean_cosine"]),
    ("hessian_coupling_heads", "hessian_coupling", ["coupling"]),
])
def test_a_figure_with_nothing_drawable_is_none(instrument_tables, kind, table, column):
    tables = _with(instrument_tables, table, **{c: float("nan") for c in column})
    if kind == "hessian_coupling_heads":
        tables = _with(tables, "hessian_coupling_layers", coupling=float("nan"))
    assert getattr(figures, kind)(tables, LABELS, {}) is None


def test_missing_values_are_skipped_not_drawn(instrument_tables):
    tables = _with(instrument_tables, "smoothness", cosine_ci_low=float("nan"), cosine_ci_high=float("nan"))
    tables = _with(tables, "stiffness", recovered=float("nan"), rise=float("nan"))
    tables = _with(tables, "tightness_pairs", cosine=float("nan"))
    for fig in figures_for(tables, LABELS, {}):
        if fig["kind"] in KINDS:
            _all_finite(fig)
    smooth = figures.smoothness_domains(tables, LABELS, {})
    assert all(d["x_lo"] is None for d in smooth["dots"] if "mean cosine" in d["title"])  # no CI: the dot alone
    assert not [c for c in figures.tightness_blocks(tables, LABELS, {})["cells"] if c["title"].startswith("cos(G[")]
    assert not [d for d in figures.stiffness_recovery(tables, LABELS, {})["dots"] if ", direction " in d["title"]]


def _all_finite(value, where="fig"):
    if isinstance(value, float):
        assert math.isfinite(value), where
    elif isinstance(value, dict):
        for k, v in value.items():
            _all_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _all_finite(v, f"{where}[{i}]")


# --- real instrument output -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(tiny_gpt2, starter):
    """Every table of the five instruments on the tiny GPT-2 (about 15 s on this machine)."""
    store, corpus, tables = Store("sqlite://"), first_domains(starter, 3, 3), {}
    for name, settings in (("smoothness", dict(max_tokens=32, bootstrap_resamples=100)),
                           ("tightness", dict(max_tokens=32)),
                           ("elasticity", dict(fisher_passages=2, steps=1, max_tokens=32, bootstrap_resamples=100)),
                           ("stiffness", dict(radii="0,3", directions=2, steps=1, lr=0.05, max_tokens=32,
                                              bootstrap_resamples=100)),
                           ("hessian_coupling", dict(probes=2, max_tokens=16))):
        tables.update(run_instrument(store, tiny_gpt2, corpus, name, progress=False, **settings).tables)
    return tables


def test_real_output_of_every_instrument_is_drawn_and_renders(measured):
    labels = {"model": "tiny-gpt2", "corpus": "3x3", "run": "0123456789abcdef", "settings": {}}
    figs = {f["kind"]: f for f in figures_for(measured, labels, {}) if f["kind"] in KINDS}
    assert list(figs) == KINDS
    env = Environment(loader=PackageLoader("atlas", "templates"), autoescape=select_autoescape(["j2", "html"]))
    module = env.get_template("_figures.html.j2").module
    for kind, fig in figs.items():
        _all_finite(fig, kind)
        assert all(a["ticks"] for a in fig["axes"]) and any(a["label"] for a in fig["axes"]), kind
        svg = str(module.draw(fig, getattr(module, kind)))
        root = ET.fromstring(svg.replace("<figcaption", "<p").replace("</figcaption>", "</p>"))  # well-formed
        assert root.find(".//{http://www.w3.org/2000/svg}svg") is not None and "nan" not in svg.lower(), kind
    n_heads = 4  # tiny GPT-2: 4 heads per layer, 2 layers
    pairs = [c for c in figs["hessian_coupling_heads"]["cells"] if ": c = " in c["title"]]
    assert len(pairs) == 2 * n_heads * (n_heads - 1)
    assert len([d for d in figs["smoothness_domains"]["dots"] if "mean cosine" in d["title"]]) == 3


def test_a_table_whose_values_are_all_missing_is_not_a_crash(measured):
    tables = {**measured, "stiffness_radii": pd.DataFrame(columns=measured["stiffness_radii"].columns)}
    assert "stiffness_recovery" not in [f["kind"] for f in figures_for(tables, LABELS, {})]  # empty: not drawn
