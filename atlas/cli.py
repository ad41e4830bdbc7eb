"""The ``atlas`` command: measure, report, list models.

    atlas measure perplexity --model smollm2-135m-instruct --corpus starter --json
    atlas measure coupling --model tiny-llama --per-domain 2      # any instrument of the registry
    atlas report --db sqlite:///atlas.db --out reports
    atlas models
    atlas vocabulary --json                                        # the Framework's terms
    atlas import-reference                                         # the seed's GPT-2 record
    atlas judge RUN territory elevated --row poetry --by NAME      # a Technician's call
    atlas train modular-addition --seed 1 --json                   # a Lab recipe's checkpoints
    atlas calibrate P5d --reps 200 --json                          # false "supported" rate and power
    atlas plan predictions/ --model tiny-gpt2                      # what a run would train, measure, reuse
    atlas nightly --models gpt2,pythia-160m --corpora starter      # every prediction over a matrix
"""

from __future__ import annotations

import difflib
import json
import uuid
from pathlib import Path

import click

from ._errors import AtlasError, BadInput
from ._jsonsafe import json_safe
from ._options import SETTINGS
from ._profiles import PROFILES
from ._table import aligned


def _setting(name: str, *declarations: str):
    """The option of a setting the pytest plugin shares (``atlas._options``): ``--NAME`` unless ``declarations``
    (flag and parameter name) say otherwise, with the setting's default, environment variable, help and check.
    A value the check refuses is a usage error (exit 2) naming the option, as ``--atlas-NAME`` is in pytest."""
    setting = SETTINGS[name]

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        try:
            return setting.check(value)
        except AtlasError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return click.option(*(declarations or ("--" + name,)), default=setting.default, envvar=setting.env,
                        show_default=True, show_envvar=True, metavar=setting.shown, help=setting.help,
                        callback=check)


_DB_OPTION = _setting("db")


def _records(df) -> list[dict]:
    """A table's rows as JSON data: a missing number as null (``atlas._jsonsafe``)."""
    return json_safe(df.to_dict(orient="records"))


def measurement_options(fn):
    """Options every ``atlas measure`` instrument takes."""
    options = [
        _setting("model", "--model", "model_name"),
        _setting("corpus", "--corpus", "corpus_path"),
        _DB_OPTION,
        _setting("device"),
        _setting("device-map"),
        _setting("dtype"),
        click.option("--per-domain", type=click.IntRange(min=1), default=None,
                     help="use only the first N passages of each domain (N >= 1)"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--no-reuse", is_flag=True, help="measure again even if an identical run is stored"),
        click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run(instrument: str, *, model_name, corpus_path, db, device, device_map, dtype, per_domain, seed, no_reuse,
         as_json, **settings):
    """Load, measure through CISP, and return the run result (Atlas's errors reach ``main`` as one clear line).

    The settings are checked against the instrument's declarations, then the corpus and the store are opened,
    all before the model loads: a bad value, file or database URL fails in a moment, and nothing is stored."""
    from ._cisp import check_instrument_settings, run_instrument
    from ._corpus import load_corpus
    from ._models import load_model
    from ._store import ProtocolLog, Store
    from .lab import LabRuns

    check_instrument_settings(instrument, {**settings, "seed": seed})
    corpus = load_corpus(corpus_path).sample(per_domain)
    store = Store(db)
    log = ProtocolLog(store, f"cli-{uuid.uuid4().hex}")
    lab = LabRuns(store, log, progress=not as_json)  # a Lab model is trained (and stored) in this store and log

    def load(name: str):
        return load_model(name, device=device, dtype=dtype, lab=lab, device_map=device_map)

    return run_instrument(store, load(model_name), corpus, instrument, reuse=not no_reuse, progress=not as_json,
                          session=log, load=load, seed=seed, **settings)


class _AtlasGroup(click.Group):
    """Every error Atlas raises on purpose (``atlas.AtlasError``) ends the command with one clear message:
    exit code 2 for bad input, 1 for what is unavailable or refused; so does a value click refuses for an
    option (``click.BadParameter``: exit 2, the option and the problem on one line). Anything else is a bug and
    keeps its traceback."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is None and not ctx.resilient_parsing:
            _no_such(ctx, "command", name, self.list_commands(ctx))
        return found

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
            ctx.exit(2)
        except AtlasError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, BadInput) else 1)


def _no_such(ctx: click.Context, what: str, name: str, names: list[str]) -> None:
    """A usage error (exit 2) for a command or instrument name that is not one, naming the close ones."""
    close = difflib.get_close_matches(name.replace("-", "_"), names, n=3, cutoff=0.6)
    ctx.fail(f"no {what} {name!r}" + (f": did you mean {' or '.join(close)}?" if close else "")
             + f" ({ctx.command_path} --help lists them)")


@click.group(cls=_AtlasGroup)
@click.version_option(package_name="atlas-landscape")
def main():
    """Atlas: measure the loss landscape of language models and judge the Framework's predictions."""


class _MeasureGroup(click.Group):
    """The instruments as subcommands, listed and described from their source (``atlas._catalog``): help
    needs no torch; the instrument itself is imported when its command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from ._catalog import catalog

        return list(catalog())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The instrument ``name`` (``hessian-coupling`` is ``hessian_coupling``); an unknown name is a usage
        error naming the close ones."""
        from ._catalog import catalog

        entry = catalog().get(name.replace("-", "_"))
        if entry is None and not ctx.resilient_parsing:
            _no_such(ctx, "instrument", name, list(catalog()))
        return None if entry is None else _measure_command(entry)


@main.group(cls=_MeasureGroup)
def measure():
    """Run one instrument through CISP and store its validated tables.

    Every instrument of the registry is a subcommand; its settings are options
    (``atlas measure NAME --help``). ``--json`` prints one object: ``rows`` (the
    primary table) and ``tables`` (every table of the run, by name).
    """


def _measure_command(entry) -> click.Command:
    """``atlas measure NAME``: one option per setting of the instrument (``atlas._catalog.CatalogEntry``)."""

    def run(**options):
        from .instruments import INSTRUMENTS

        instrument = INSTRUMENTS[entry.name]
        common = {k: options.pop(k) for k in _COMMON}
        result = _run(instrument.name, **common, **options)
        tables = result.tables
        if common["as_json"]:
            out = {"run_id": result.run.id, "reused": result.reused, "instrument": instrument.name,
                   "model": result.run.model, "model_revision": result.run.model_revision,
                   "corpus_hash": result.run.corpus_hash, "settings": result.run.settings,
                   "rows": _records(tables[instrument.table]),
                   "tables": {name: _records(df) for name, df in tables.items()}}
            if instrument.name == "perplexity":
                out["bos_policy"] = result.run.settings["bos_policy"]
                out["domains"] = _records(tables["perplexity_domains"][list(_DOMAIN_FIELDS)])
            click.echo(json.dumps(out))
            return
        click.echo(f"run {result.run.id}{' (reused)' if result.reused else ''}: {instrument.name} on "
                   f"{result.run.model} and {result.run.corpus} ({result.run.corpus_hash[:19]})")
        for name in instrument.summaries or [instrument.table]:
            click.echo(f"\n{name}:\n" + tables[name].to_string(index=False, float_format=lambda x: f"{x:.4g}"))

    for setting in reversed(entry.settings):
        flag, default = "--" + setting.name.replace("_", "-"), setting.default
        text = setting.help or None
        if setting.model:
            run = click.option(flag, setting.name, default=None, type=str,
                               help=text or "another model: registry name, checkpoint directory or hub id")(run)
        elif setting.choices:
            run = click.option(flag, setting.name, default=default, type=click.Choice(setting.choices),
                               show_default=True, help=text)(run)
        elif isinstance(default, bool):
            run = click.option(f"{flag}/--no-{flag[2:]}", setting.name, default=default, show_default=True,
                               help=text)(run)
        else:
            run = click.option(flag, setting.name, default=default, type=type(default), show_default=True,
                               help=text)(run)
    return click.command(entry.name, help=entry.summary or None)(measurement_options(run))


_COMMON = ("model_name", "corpus_path", "db", "device", "device_map", "dtype", "per_domain", "seed", "no_reuse",
           "as_json")
_DOMAIN_FIELDS = ("domain", "n", "ppl", "ci_low", "ci_high", "bits_per_byte")


@main.command()
@click.argument("paths", nargs=-1)
@click.option("-k", "keyword", default=None, help="only the predictions this expression selects (as pytest -k)")
@_setting("model")
@_setting("corpus")
@_DB_OPTION
@_setting("device")
@_setting("device-map")
@_setting("dtype")
@_setting("profile")
def plan(paths, keyword, model, corpus, db, device, device_map, dtype, profile):
    """List what `pytest predictions/` would do, and run nothing: the Lab runs to train, the instrument runs to
    measure or reuse from the store, each with an estimated wall time and peak memory, and the total.

    PATHS: prediction modules or folders (default: predictions). It is `pytest PATHS --atlas-plan` with these
    options (atlas._plan), so the plan is the one a run would take."""
    import pytest

    options = {"model": model, "corpus": corpus, "db": db, "device": device, "device-map": device_map, "dtype": dtype,
               "profile": profile}
    args = [*(paths or ["predictions"]), "--atlas-plan", "-q", "--no-header", "-p", "no:cacheprovider",
            "-W", "ignore::pytest.PytestAssertRewriteWarning",  # atlas is imported already: the command runs it
            *(f"--atlas-{name}={value}" for name, value in options.items()), *(["-k", keyword] if keyword else [])]
    click.get_current_context().exit(int(pytest.main(args)))


@main.command()
@_DB_OPTION
@_setting("reports", "--out")
def report(db, out):
    """Re-render the HTML verdict report from the store."""
    from ._report import render_report
    from ._store import Store

    click.echo(render_report(Store(db), out))


@main.command()
@_DB_OPTION
@click.option("--repair", is_flag=True,
              help="re-create what the store's guard lacks (a dropped table, empty; a dropped, altered or disabled "
                   "trigger) and log it in the protocol log; records that do not verify stay named")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object: ok, records, gaps, problems, heads (and what --repair did)")
def verify(db, repair, as_json):
    """Check the whole store: every record against its content hash and its table's hash chain (a run's rows
    and a verdict's runs included), and the triggers that keep it append-only. Every broken record is named.

    Exit status: 0 the store verifies, 1 it does not (2: bad input, such as a store that does not exist).
    Opening a store never repairs it; only --repair does, and says so. Keep the chains' heads (--json) elsewhere
    to rule out a rewrite of a whole chain."""
    from ._store import Store

    store = Store(db, open_broken=True, create=False)
    repaired = store.repair() if repair else []
    result = store.verify()
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "repaired": repaired}, ensure_ascii=False))
    else:
        for line in [*(f"repaired: {r}" for r in repaired), *result.lines()]:
            click.echo(line)
        checked = f"{sum(result.records.values())} record(s) in {len(result.records)} tables"
        click.echo(f"{result.url}: {checked}, " + ("all verified" if result.ok else
                                                   f"{len(result.lines())} problem(s): NOT VERIFIED"))
    if not result.ok:
        click.get_current_context().exit(1)


@main.command()
def models():
    """List the model registry: each name, where its weights come from, and whether they are on this machine
    (and how to get them when they are not). Any Hugging Face id ORG/NAME, checkpoint folder or Lab run
    (lab:RECIPE@SEED) is a model name too."""
    from ._registry import MODELS, availability

    rows = [(s.name, s.source, availability(s), s.description) for s in MODELS.values()]
    for line in aligned(("name", "source", "on this machine", "description"), rows, right=set()):
        click.echo(line)


@main.command()
@_DB_OPTION
@click.option("--corpus", default=None,
              help="only verdicts on this corpus: its name (domains-v1[:24/domain]), its file's name (domains-v1: "
                   "every sample of it) or the start of its hash (sha256:...)")
@click.option("--profile", default=None, type=click.Choice(tuple(PROFILES)), help="only verdicts of this profile")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with a `verdicts` list")
def verdicts(db, corpus, profile, as_json):
    """The latest verdict of every prediction version on every model, corpus and profile."""
    from ._flips import corpus_matches, verdict_cells, verdict_json
    from ._store import Store

    store = Store(db)
    adjustments = store.adjustments()
    latest = [verdict_json(v, adjustments.get(v.id)) for v in store.latest_verdicts()]
    latest = [v for v in latest if (corpus is None or corpus_matches(v, corpus))
              and (profile is None or v["profile"] == profile)]
    if as_json:
        click.echo(json.dumps({"verdicts": latest}))
        return
    if not latest:
        asked = " ".join(f"--{k} {v}" for k, v in (("corpus", corpus), ("profile", profile)) if v)
        click.echo(f"no verdict matches {asked}" if asked else "no verdicts stored yet: run pytest predictions/")
        return
    headers = ("prediction", "version", "form", "model", "corpus", "profile", "outcome", "after Holm", "effect",
               "95% CI", "criterion", "n", "scope")
    cells = [verdict_cells(v) for v in latest]
    rows = [tuple(c[h] for h in headers) for c in cells]
    for line in aligned(headers, rows, right={8, 9}):
        click.echo(line)


@main.command()
@_DB_OPTION
@click.option("--instrument", default=None, help="only runs of this instrument (lab: Lab trainings)")
@click.option("--model", "model_name", default=None, help="only runs on this model")
@click.option("--last", type=click.IntRange(min=1), default=None, help="only the newest N runs")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with a `runs` list")
def runs(db, instrument, model_name, last, as_json):
    """The runs in the store, oldest first: the id to give `atlas export` or to find in the report, what was
    measured (or trained) on which model and corpus, its status and how long it took."""
    from ._store import Store

    where = {k: v for k, v in (("instrument", instrument), ("model", model_name)) if v is not None}
    found = sorted(Store(db).runs(**where), key=lambda r: r.started_at)[-last if last else None:]
    listed = [{"run_id": r.id, "instrument": r.instrument, "model": r.model, "corpus": r.corpus,
               "provenance": r.provenance, "status": r.status, "started_at": r.started_at.isoformat(),
               "seconds": round((r.ended_at - r.started_at).total_seconds(), 1)} for r in found]
    if as_json:
        click.echo(json.dumps({"runs": listed}))
        return
    if not listed:
        click.echo("no run matches" if where else "no run in the store yet: pytest predictions/ or atlas measure")
        return
    rows = [(r["run_id"], r["instrument"], r["model"], r["corpus"], r["provenance"], r["status"],
             r["started_at"][:19].replace("T", " "), f"{r['seconds']:.1f} s") for r in listed]
    for line in aligned(("run id", "instrument", "model", "corpus", "provenance", "status", "started (UTC)", "took"),
                        rows, right={7}):
        click.echo(line)


@main.command()
@click.argument("ids", nargs=-1)
@click.option("--reps", type=click.IntRange(min=1), default=200, show_default=True,
              help="simulated draws per null and per alternative")
@click.option("--resamples", type=click.IntRange(min=100), default=None,
              help="bootstrap resamples per draw (default: the profile's)")
@_setting("profile")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--predictions", "folder", default="predictions", show_default=True,
              type=click.Path(exists=True), help="folder (or one module) of prediction modules")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with a `predictions` list")
@click.option("--store", "store_url", default=None,
              help="also store the rates (SQLAlchemy URL of the store; e.g. sqlite:///atlas.db): the report shows "
                   "them beside each verdict of the same prediction version")
@click.option("--check", is_flag=True,
              help="exit 1 when a prediction declares no null, or a null's false supported rate is above 5% by more "
                   "than two Monte-Carlo errors (the CI's gate)")
def calibrate(ids, reps, resamples, profile, seed, folder, as_json, store_url, check):
    """Measure each prediction's false "supported" rate under its declared nulls, and its power.

    IDS: prediction ids or their prefixes (e.g. P5d P12); all predictions when none is given. Each
    prediction's own analysis and criterion judge evidence simulated from the nulls and the alternative
    its marker declares (``atlas._calibrate``)."""
    from ._calibrate import calibrate as run_calibration
    from ._calibrate import discover

    from ._calibrate import calibration_records
    from ._profiles import PROFILES
    from ._store import Store

    store = Store(store_url) if store_url else None  # a bad URL fails before any simulation
    declared = discover([Path(folder)], tuple(ids))
    say = None if as_json else (lambda line: click.echo(f"  {line}", err=True))
    results = run_calibration(declared, reps=reps, seed=seed, resamples=resamples, profile=profile, progress=say)
    if store is not None:
        store.write_all(calibration_records(results, profile=profile, seed=seed,
                                            resamples=resamples or PROFILES[profile].bootstrap_resamples))
    if as_json:
        click.echo(json.dumps(json_safe({"reps": reps, "seed": seed, "profile": profile, "predictions": results})))
    else:
        _print_calibration(results)
    failing = [f"{e['id']}: {n['name']} {n['false_supported']:.3f}" for e in results for n in e["nulls"]
               if n["false_supported"] - 2 * n["mc_error"] > 0.05] + [e["id"] + ": no nulls" for e in results
                                                                       if not e["nulls"]]
    if check and failing:
        click.echo(f"Error: false supported above 5% or unmeasured: {'; '.join(failing)}", err=True)
        raise SystemExit(1)


def _print_calibration(results: list[dict]) -> None:
    rows = []
    for entry in results:
        for null in entry["nulls"]:
            rows.append((entry["id"], f"null: {null['name']}", f"{null['false_supported']:.3f}",
                         f"{null['mc_error']:.3f}", "yes" if null["false_supported"] <= 0.05 else "NO"))
        for alt in entry["power"]:
            rows.append((entry["id"], f"power: {alt['name']}", f"{alt['supported']:.3f}", f"{alt['mc_error']:.3f}",
                         ""))
        if not entry["nulls"]:
            rows.append((entry["id"], entry.get("note", ""), "-", "-", "NO"))
    for line in aligned(("prediction", "simulated", "supported", "MC error", "<= 5%"), rows, {2, 3}):
        click.echo(line)


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--out", default="reports/flips.json", show_default=True, type=click.Path(dir_okay=False),
              help="where the flips are written as JSON")
def diff(old, new, out):
    """Compare two `atlas verdicts --json` files (OLD, e.g. last night's, and NEW): print every flip, an
    outcome that changed for the same prediction, model, corpus and profile, and write them to --out.

    Exit status: 0 no flip, 3 at least one flip (1: a file could not be read).
    """
    from ._errors import FlipsError
    from ._flips import compare, load_verdicts

    try:
        result = compare(load_verdicts(old), load_verdicts(new))
    except FlipsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"old": str(old), "new": str(new), **result.as_dict()}, indent=1) + "\n",
                             encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None
    _print_comparison(result, out)
    if result.flips:
        click.get_current_context().exit(3)


def _print_comparison(result, out) -> None:
    """Every flip of an ``atlas._flips.Comparison``, what appeared and what is gone, and the count."""
    from ._flips import number

    for f in result.flips:
        was, now = f["old"], f["new"]
        ci = lambda s: "" if s["ci_low"] is None else f" [{number(s['ci_low'])}, {number(s['ci_high'])}]"  # noqa: E731
        click.echo(f"FLIP {f['prediction']} on {f['model']} · {f['corpus'] or '—'} · {f['profile'] or '—'}: "
                   f"{f['from']} -> {f['to']} (effect {number(was['effect'])}{ci(was)} -> {number(now['effect'])}{ci(now)}"
                   f"{'; criterion version changed' if f['version_changed'] else ''})")
    for kind in ("appeared", "gone"):
        for r in getattr(result, kind):
            click.echo(f"{kind}: {r['prediction']} on {r['model']} · {r['corpus'] or '—'} · {r['profile'] or '—'} "
                       f"({r['outcome']})")
    click.echo(f"{len(result.flips)} flip(s) among {result.compared} verdicts in both files; written to {out}")


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--models", default=SETTINGS["model"].default, show_default=True, metavar="NAME,NAME,...",
              help="the matrix's models, comma-separated (each as --model takes it)")
@click.option("--corpora", default=SETTINGS["corpus"].default, show_default=True, metavar="FILE,FILE,...",
              help="the matrix's corpora, comma-separated (each as --corpus takes it)")
@_setting("profile")
@_DB_OPTION
@_setting("reports", "--out")
@_setting("device")
@_setting("dtype")
@_setting("device-map")
@_setting("executor")
@_setting("ray-address")
@click.option("--previous", default=None, type=click.Path(dir_okay=False),
              help="last night's `atlas verdicts --json` file (default: OUT/verdicts.json as the last night left it, "
                   "kept as OUT/verdicts.previous.json)")
@click.option("--cells-at-once", default=1, show_default=True, type=click.IntRange(min=1),
              help="cells run side by side (with --executor ray the cluster schedules their measurements)")
def nightly(paths, models, corpora, profile, db, out, device, dtype, device_map, executor, ray_address, previous,
            cells_at_once):
    """Replicate every prediction over a matrix of models x corpora: one `pytest PATHS` per cell (default
    PATHS: predictions) into one store, then the night's verdicts (OUT/verdicts.json), the flips against the
    previous night (OUT/flips.json) and the matrix: per corpus, one row per prediction, one column per model, and
    how many models support it.

    Exit status: 0 no flip, 3 a verdict flipped, 1 a cell crashed (the others still run)."""
    from ._cluster import check_cluster_store
    from ._corpus import load_corpus
    from ._flips import verdict_json
    from ._nightly import Cell, matrix_lines, night_verdicts, pytest_args, rotate, run_cells, write_night
    from ._registry import check_model_name
    from ._store import Store

    names = [check_model_name(m.strip()) for m in models.split(",") if m.strip()]
    files = [c.strip() for c in corpora.split(",") if c.strip()]
    if not names or not files:
        raise click.UsageError("--models and --corpora each need at least one name")
    if executor == "ray":
        check_cluster_store(db)
    cells = [Cell(m, c, load_corpus(c).name) for c in files for m in names]
    options = {"profile": profile, "db": db, "reports": out, "device": device, "dtype": dtype,
               "device-map": device_map, "executor": executor, "ray-address": ray_address}
    before = rotate(Path(out), Path(previous) if previous else None)
    statuses = run_cells(cells, lambda cell: pytest_args(list(paths) or ["predictions"], cell, options),
                         cells_at_once=cells_at_once, say=click.echo)
    store = Store(db)
    adjustments = store.adjustments()
    night = night_verdicts([verdict_json(v, adjustments.get(v.id)) for v in store.latest_verdicts()], cells, profile)
    result = write_night(Path(out), night, before)
    for line in matrix_lines(night, cells):
        click.echo(line)
    if result is None:
        click.echo(f"no previous night to compare with: {len(night)} verdicts written to {Path(out) / 'verdicts.json'}")
    else:
        _print_comparison(result, Path(out) / "flips.json")
    crashed = [c for c, status in statuses.items() if status > 1]
    for cell in crashed:
        click.echo(f"CRASH: pytest on {cell.model}, {cell.corpus} exited {statuses[cell]}", err=True)
    click.get_current_context().exit(1 if crashed else 3 if result is not None and result.flips else 0)


@main.command()
@click.argument("run_id", required=False)
@click.option("--prediction", default=None, help="export the runs of this prediction's latest verdicts instead")
@click.option("--table", "tables", multiple=True, help="only this table of the run (repeatable)")
@click.option("--format", "fmt", default="csv", show_default=True, type=click.Choice(["csv", "json", "parquet"]),
              help="parquet needs pyarrow: pip install 'atlas-landscape[export]'")
@click.option("--out", default="export", show_default=True, type=click.Path(file_okay=False),
              help="directory to write into: <run id>/<table>.<format> and <run id>/provenance.json")
@_DB_OPTION
def export(run_id, prediction, tables, fmt, out, db):
    """Write stored tables with their provenance: RUN_ID (or a unique prefix of it), or --prediction ID."""
    from ._errors import ExportError, JudgmentError
    from ._export import export_prediction, export_run
    from ._judgment import resolve_target
    from ._store import Store

    if (run_id is None) == (prediction is None):
        raise click.UsageError("give a RUN_ID or --prediction ID (one of them)")
    if prediction is not None and tables:
        raise click.UsageError("--table selects tables of one run: give a RUN_ID with it")
    store = Store(db)
    try:
        if prediction is not None:
            paths = export_prediction(store, prediction, out, fmt)
        else:
            paths = export_run(store, resolve_target(store, f"run:{run_id}").run, out, fmt, tables or None)
    except (ExportError, JudgmentError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write the export to {out}: {exc.strerror or exc}; choose another --out") from None
    for path in paths:
        click.echo(path)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with a `terms` list")
def vocabulary(as_json):
    """The Framework's 18 terms (schema/vocabulary.yaml) and what measures each."""
    from ._vocabulary import vocabulary as load

    terms = load()
    if as_json:
        click.echo(json.dumps({"terms": [t.as_dict() for t in terms.values()]}, ensure_ascii=False))
        return
    group = None
    for t in terms.values():
        if t.group != group:
            group = t.group
            click.echo(f"\n{group.replace('_', ' ')}:")
        name = t.name + (" (name reconstructed)" if t.name_reconstructed else "")
        click.echo(f"  {t.id:21} {' / '.join(t.poles):24} {t.version}  {name:40} "
                   f"{t.marker or ', '.join(t.instruments)}")


@main.command()
@click.argument("target")
@click.argument("field")
@click.argument("value")
@click.option("--by", required=True, help="who makes the call (a Technician's name)")
@click.option("--note", default="", help="why, in a sentence")
@click.option("--table", default=None, help="the run's table the field belongs to (when several declare it)")
@click.option("--row", default=None, help="the row the call is about, e.g. a domain or a layer")
@_DB_OPTION
def judge(target, field, value, by, note, table, row, db):
    """Record a Technician's call on a declared Technician field of a run or verdict.

    TARGET is a run id (or a unique prefix) or a verdict id (``run:``/``verdict:`` settle
    ambiguity); FIELD a field declared under ``technician:`` in the schema of one of the
    run's tables (or in schema/verdicts.yaml for verdicts); VALUE one of its allowed values.
    A new call is a new row: the latest counts, earlier ones stay in the history.
    """
    from ._judgment import judge as record
    from ._store import Store

    j = record(Store(db), target, field, value, by=by, note=note, table=table, row=row)
    where = f"{j.table_name}[{j.row_key}]." if j.row_key is not None else (f"{j.table_name}." if j.table_name else "")
    click.echo(f"judged {j.target_kind} {j.target_id[:12]}: {where}{j.field} = {j.value!r} by {j.by} (judgment {j.id})")


def _print_import(result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"sheet": result.sheet, "hash": result.hash, "already": result.already,
                               "runs": [{"run_id": r.id, "instrument": r.instrument, "tables": sorted(
                                   result.tables.get(r.id, {}))} for r in result.runs],
                               "judgments": len(result.judgments)}))
        return
    if result.already:
        click.echo(f"{result.sheet} was imported before (runs {', '.join(r.id[:8] for r in result.runs)}; "
                   f"content {result.hash[:19]}): nothing written")
        return
    for r in result.runs:
        for name, df in result.tables[r.id].items():
            click.echo(f"imported run {r.id} ({name}, {len(df)} rows) for {r.model} from {r.corpus}")
    click.echo(f"{len(result.judgments)} Technician judgment(s) recorded from the sheet")


@main.command("import")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--reference", default=None, help="a bundled reference sheet instead of FILE, e.g. gpt2-april-2026")
@click.option("--table", default=None, help="CSV: the table it holds (inferred from the header when unambiguous)")
@click.option("--model", default=None, help="CSV: the model measured")
@click.option("--source", default=None, help="CSV: where the numbers come from")
@click.option("--by", "judged_by", default=None, help="CSV: who made its Technician calls (default: --source)")
@click.option("--date", default=None, help="CSV: when it was measured")
@click.option("--caveat", "caveats", multiple=True, help="CSV: a caveat of the record (repeatable)")
@click.option("--default", "defaults", multiple=True, metavar="COLUMN=VALUE",
              help="CSV: a value every row shares (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_DB_OPTION
def import_cmd(file, reference, table, model, source, judged_by, date, caveats, defaults, as_json, db):
    """Import measurements taken elsewhere (a YAML/JSON sheet or a CSV table) as runs of provenance
    "imported", validated against the same schema as measured tables (format: atlas/_import.py)."""
    from ._import import import_sheet, load_sheet, reference_sheet
    from ._store import Store

    if (file is None) == (reference is None):
        raise click.UsageError("give a FILE or --reference NAME (one of them)")
    pairs = dict(d.split("=", 1) for d in defaults if "=" in d)
    if len(pairs) != len(defaults):
        raise click.UsageError("--default takes COLUMN=VALUE")
    sheet = reference_sheet(reference) if reference else load_sheet(
        file, table=table, model=model, source=source, judged_by=judged_by, date=date, caveats=caveats,
        defaults=pairs)
    _print_import(import_sheet(Store(db), sheet), as_json)


@main.command("import-reference")
@click.argument("name", default="gpt2-april-2026")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_DB_OPTION
def import_reference(name, as_json, db):
    """Import a bundled reference sheet (default: the seed's GPT-2 record of April 2026)."""
    from ._import import import_sheet, reference_sheet
    from ._store import Store

    _print_import(import_sheet(Store(db), reference_sheet(name)), as_json)


def _recipes_epilog() -> str:
    from ._catalog import recipe_names

    return "\b\nRecipes bundled: " + ", ".join(recipe_names()) + " (or a YAML file of your own; see docs/lab.md)"


@main.command("train", epilog=_recipes_epilog())
@click.argument("recipe")
@click.option("--seed", type=int, default=None, help="the run's seed (default: the recipe's)")
@click.option("--out", default=None, help="directory of runs (default: $ATLAS_CACHE/lab, i.e. ~/.cache/atlas/lab)")
@click.option("--steps", type=int, default=None, help="train this many steps instead of the recipe's")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with `trajectory` and `checkpoints`")
@_DB_OPTION
def train_cmd(recipe, seed, out, steps, as_json, db):
    """Train a Lab recipe (a bundled name, e.g. modular-addition, or a YAML file) and write each
    checkpoint as a Hugging Face directory OUT/<recipe>/seed-<S>/step-<N>/ with its trajectory.

    A finished run of the same recipe and seed under OUT is reused, not retrained; the trajectory is
    stored in the store as a run (instrument ``lab``), reused in the same way."""
    from ._store import ProtocolLog, Store
    from .lab._recipe import load_recipe
    from .lab._runs import trained_run

    recipe = load_recipe(recipe)  # a bad recipe is refused before the store is opened
    store = Store(db)
    result, run = trained_run(store, recipe, seed, out=out, steps=steps, progress=not as_json,
                              log=ProtocolLog(store, f"cli-{uuid.uuid4().hex}"))
    checkpoints = [{"step": step, "path": str(path)} for step, path in result.checkpoints]
    if as_json:
        click.echo(json.dumps({"run_id": run.id, "recipe": result.recipe.name, "recipe_hash": result.recipe.hash,
                               "seed": result.seed,
                               "reused": result.reused, "wall_s": result.wall_s, "cpu_s": result.cpu_s,
                               "run_dir": str(result.run_dir), "trajectory": _records(result.trajectory),
                               "checkpoints": checkpoints}))
        return
    click.echo(f"{result.recipe.name} seed {result.seed}{' (reused)' if result.reused else ''}: "
               f"{len(checkpoints)} checkpoints in {result.run_dir} ({result.wall_s:.1f} s of training)\n")
    click.echo(result.trajectory.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


@main.group()
def new():
    """Write a first prediction or instrument from templates that run as they are (atlas._scaffold)."""


@new.command("prediction")
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
              help="the project folder: the module goes in its predictions/, the outcome tests in its tests/")
def new_prediction(name, folder):
    """Write predictions/test_NAME.py, a pre-registered claim that runs at once, and its outcome tests."""
    from ._scaffold import new_prediction

    module, outcomes = new_prediction(name, folder)
    click.echo(f"wrote {module}\nwrote {outcomes}\n\nnext:\n  pytest {module} --atlas-model tiny-gpt2\n"
               f"  pytest {outcomes}\n  atlas calibrate {name} --predictions {module.parent}")


@new.command("instrument")
@click.argument("name")
def new_instrument(name):
    """Write atlas/instruments/NAME.py, schema/NAME.yaml and tests/test_NAME.py in this checkout of Atlas,
    and register the instrument on the registration line of atlas/instruments/__init__.py."""
    from ._scaffold import new_instrument

    for path in new_instrument(name):
        click.echo(f"wrote {path}")
    click.echo(f"\nnext:\n  atlas measure {name} --model tiny-gpt2 --per-domain 2\n  pytest tests/test_{name}.py")
