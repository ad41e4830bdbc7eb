"""The pytest plugin (registered through the ``pytest11`` entry point): ``pytest predictions/`` just works.

Options: every setting of ``atlas._options`` as ``--atlas-NAME`` (model, corpus, db, reports,
device, device-map, dtype, profile, pair, executor, ray-address), each also read from the environment variable
``ATLAS_NAME``;
``pytest --help`` lists them with the values they take and their defaults.

Outcomes: supported passes; refuted fails with its own status (``R``, "refuted");
inconclusive has its own status (``I``, counted as "inconclusive"); not run skips.
A body that returns without a verdict fails as "NO VERDICT" (``N``), and a crash is
an ordinary failure (``F``): neither is ever counted as passed or as refuted.
Prediction ids are keywords (``pytest predictions/ -k P5d``). A bad ``--atlas-*``
value (the store's URL included) is one usage error before any model is loaded. One
pytest run is one protocol-log session, shared by its xdist workers; when it ends by
itself (not killed or interrupted) the controller closes the session
(``SESSION_COMPLETE``), so the verdicts of a killed session can be told from a
complete one's. Then the controller (never an xdist worker) renders
``reports/index.html`` from the store. The store's URL is only shown with its
password masked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ._cluster import check_cluster_store, cluster_address, measure_on_cluster
from ._errors import AtlasError, Inconclusive, RefutedVerdict
from ._predict import AtlasSession, Prediction, store_adjustments
from ._verdict import Outcome
from ._profiles import PROFILES, using_profile
from ._progress import routed
from ._options import SETTINGS, model_pair
from ._plan import SLOW_SECONDS, lab_runs, plan, plan_lines, slow
from ._registry import LAB_PREFIX
from ._costs import training_estimate
from ._table import aligned, duration
from ._urls import check_store_url, shown_url, unmade_sqlite_file
from .lab import LabRuns

_SESSION = pytest.StashKey[str]()
_ESTIMATES = pytest.StashKey[dict]()  # run id -> the cost model's seconds, for the run's summary

def pytest_addoption(parser: pytest.Parser) -> None:
    """``--atlas-NAME`` for every setting of ``atlas._options``. The parser's default is None: an option not
    given falls back to the environment variable, then to the setting's default (``_option``)."""
    group = parser.getgroup("atlas", "Atlas predictions")
    for name, setting in SETTINGS.items():
        how = {"action": "store_const", "const": "yes"} if setting.flag else {"metavar": setting.shown}
        group.addoption(f"--atlas-{name}", dest=_dest(name), default=None, **how,
                        help=f"{setting.help} (env {setting.env}; default {setting.default or 'none'})")


def _dest(name: str) -> str:
    return "atlas_" + name.replace("-", "_")


def _option(config: pytest.Config, name: str) -> str:
    return SETTINGS[name].value(config.getoption(_dest(name)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "prediction(id, claim, criterion, needs, source='', form='general', model=None): "
                   "an Atlas prediction; see atlas._predict")
    for name, meaning in _SELECTION.items():
        config.addinivalue_line("markers", f"{name}: {meaning} (set by Atlas from the prediction's declaration)")
    config.pluginmanager.register(_ReportWriter(config), "atlas-report-writer")
    lastfailed = config.pluginmanager.get_plugin("lfplugin")  # None with -p no:cacheprovider
    if lastfailed is not None:
        config.pluginmanager.register(_InconclusiveAgain(lastfailed), "atlas-inconclusive-again")
    worker = getattr(config, "workerinput", None)
    config.stash[_SESSION] = worker["atlas_session"] if worker and "atlas_session" in worker else uuid.uuid4().hex
    _check_options(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: every worker writes to the controller's protocol-log session."""
    node.workerinput["atlas_session"] = node.config.stash[_SESSION]


def _check_options(config: pytest.Config) -> None:
    """Every --atlas-* value checked once by its setting (``atlas._options.Setting.check``, as the command checks
    it), before any model loads: one usage error naming the option and the fix."""
    for name, setting in SETTINGS.items():
        try:
            setting.check(_option(config, name))
        except AtlasError as exc:
            raise pytest.UsageError(f"--atlas-{name}: {exc}") from None
    if _option(config, "plan") == "yes" and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--atlas-plan lists what this process collects: drop -n (xdist's workers collect)")
    if _option(config, "executor") == "ray" and _option(config, "plan") != "yes":
        if getattr(config.option, "numprocesses", None):
            raise pytest.UsageError("--atlas-executor ray measures on the cluster: drop -n (the cluster's workers "
                                    "share the work)")
        try:
            check_cluster_store(_option(config, "db"))
            cluster_address(_option(config, "ray-address"))
        except AtlasError as exc:
            raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def atlas_session(request: pytest.FixtureRequest) -> AtlasSession:
    """Options, store, model cache and measurement cache shared by every prediction of the run. The Lab runs the
    collected predictions need and that are not on disk are trained first, side by side on the machine's cores
    (``LabRuns.prepare``; not in an xdist worker, where the workers already share the cores)."""
    config = request.config
    session = _atlas_session(config)
    _show_progress(config, session)
    session.lab = LabRuns(session.store, session.log, progress=session.live)  # the Lab resolver: trains are stored
    session.estimates = config.stash.setdefault(_ESTIMATES, {})
    if not hasattr(config, "workerinput"):
        with session.terminal():
            session.lab.prepare(lab_runs(session, request.session.items))
            if _option(config, "executor") == "ray":
                try:
                    measure_on_cluster(session, request.session.items, cluster_address(_option(config, "ray-address")),
                                       say=session.say)
                except AtlasError as exc:  # the cluster, or a measurement on it that failed for good
                    pytest.exit(f"--atlas-executor ray: {type(exc).__name__}: {exc}",
                                returncode=pytest.ExitCode.USAGE_ERROR)
    return session


def _session_of(pytestconfig: pytest.Config) -> AtlasSession:
    """A session from the run's options, its store not opened yet."""
    return AtlasSession(model_name=_option(pytestconfig, "model"), corpus_path=_option(pytestconfig, "corpus"),
                        db_url=_option(pytestconfig, "db"), reports_dir=_reports_dir(pytestconfig),
                        device=_option(pytestconfig, "device"), dtype=_option(pytestconfig, "dtype"),
                        device_map=_option(pytestconfig, "device-map"),
                        profile=PROFILES[_option(pytestconfig, "profile")],
                        pair=model_pair(_option(pytestconfig, "pair")), session_id=pytestconfig.stash[_SESSION])


def _atlas_session(pytestconfig: pytest.Config) -> AtlasSession:
    """The run's session, from its options. A store that cannot be opened (unreachable, unwritable) ends the run
    with one usage error before any model loads. In an xdist worker it is an error of the worker's tests, which
    names it: a worker's ``pytest.exit`` would reach the controller as a crash with no message
    (``pytest_xdist_setupnodes`` opened an existing store already)."""
    session = _session_of(pytestconfig)
    try:
        session.store
    except AtlasError as exc:
        if hasattr(pytestconfig, "workerinput"):
            raise
        pytest.exit(f"--atlas-db: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    return session


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs) -> None:
    """xdist: the controller opens the store before the workers start, so that a store that cannot be opened
    is one usage error here, before any worker loads a model. It creates none: the controller does not collect,
    and a run that collects no prediction leaves no store behind; a new SQLite file is made by the first worker
    that needs it (the store's write lock orders the workers' first uses, ``atlas._store._prepare``)."""
    if _option(config, "plan") != "yes" and not unmade_sqlite_file(check_store_url(_option(config, "db"))):
        _atlas_session(config).store.engine.dispose()


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--atlas-plan``: print the plan of the collected predictions (``atlas._plan``) and end the session there,
    without running a test body, training or measuring anything. Collection errors end it as they would a run."""
    config = session.config
    if _option(config, "plan") != "yes" or (session.testsfailed and not config.option.continue_on_collection_errors):
        return None
    atlas = _atlas_session(config)
    terminal = config.pluginmanager.getplugin("terminalreporter")
    terminal.write_sep("-", "Atlas plan")
    for line in plan_lines(atlas, plan(atlas, session.items)):
        terminal.write_line(line)
    return True


def _show_progress(config: pytest.Config, session: AtlasSession) -> None:
    """While a Lab run trains or an instrument measures, its progress reaches the terminal (pytest captures output
    otherwise): a live tqdm bar on a TTY; off one (CI, a log), a line when a step starts, at most one every 30 s
    and one when it ends, each written by pytest's terminal writer on a line of its own (``atlas._progress``);
    nothing with ``-q``. One line per run (measured or reused, wall time) in any case. Under xdist the workers'
    output is not shown: the controller's summary lists every run instead."""
    capture = config.pluginmanager.getplugin("capturemanager")
    terminal = config.pluginmanager.getplugin("terminalreporter")
    if hasattr(config, "workerinput") or capture is None or terminal is None:
        return
    say = session.say = lambda line: terminal.write_line(f"  atlas: {line}")

    @contextmanager
    def lines() -> Iterator[None]:  # off a terminal: each progress line through pytest's writer, on a line of its own
        with capture.global_and_fixture_disabled(), routed(say):
            yield

    session.terminal = capture.global_and_fixture_disabled if terminal.isatty else lines
    session.live = config.get_verbosity() >= 0  # -q: quiet


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A prediction's id is one of its keywords, so ``-k P5d`` selects it, and its declaration gives it the
    markers of ``_SELECTION`` (``slow``: by the cost model, ``atlas._plan.slow``, rated once for the whole
    collection). A test in a ``predictions/`` folder, or marked as a prediction, that does not take the
    ``prediction`` fixture would pass with nothing stored: it is a collection error."""
    stray = [item.nodeid for item in items
             if (item.get_closest_marker("prediction") is not None or "predictions" in item.path.parent.parts)
             and "prediction" not in getattr(item, "fixturenames", ())]
    if stray:
        raise pytest.UsageError(f"{', '.join(stray)}: a test among the predictions must take the `prediction` "
                                "fixture and be marked @pytest.mark.prediction(...) (helpers go in a module of "
                                "their own, not named test_*)")
    for item in items:
        marker = item.get_closest_marker("prediction")
        if marker is None:
            continue
        if marker.kwargs.get("id"):
            item.extra_keyword_matches.add(marker.kwargs["id"])
        item.add_marker(marker.kwargs.get("form", "general"))
        if any(name.startswith(LAB_PREFIX) for name in _declared_models(marker.kwargs)):
            item.add_marker("lab")
    predictions = [item for item in items if item.get_closest_marker("prediction") is not None]
    rated = slow(_session_of(config), predictions) if predictions else {}
    for item in predictions:
        if item.nodeid in rated:
            item.add_marker("slow")


#: the markers Atlas gives each prediction, for ``-m`` (``-m "not lab"``: no Lab training, a quick run)
_SELECTION = {"named": "a named form: a claim about the models it names",
              "general": "a general form: a claim about the model --atlas-model names",
              "lab": "measures a Lab run (lab:RECIPE@SEED), trained first when it is not on disk",
              "slow": f"trains (a Lab run), or the cost model expects its instrument runs to take over "
                      f"{SLOW_SECONDS:.0f} s on the selected model, profile and corpus, or cannot rate one of them"}


def _declared_models(declaration: dict) -> list[str]:
    """The model names a prediction's declaration gives: its models, its default pair, and the models its
    instruments' declared settings name."""
    model, pair, needs = declaration.get("model"), declaration.get("default_pair"), declaration.get("needs", ())
    settings = [v for declared in needs.values() for v in declared.values()] if isinstance(needs, dict) else []
    return [m for m in [*([model] if isinstance(model, str) else model or ()), *(pair or ()), *settings]
            if isinstance(m, str)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A prediction's node id carries its id (``test_grokking_is_a_phase_transition[P8-grokking-...]``), so the
    terminal, ``--lf`` and a CI log name it: the ``prediction`` fixture is parametrized by it (and ignores it)."""
    marker = metafunc.definition.get_closest_marker("prediction")
    if marker is not None and marker.kwargs.get("id") and "prediction" in metafunc.fixturenames:
        metafunc.parametrize("prediction", [marker.kwargs["id"]], ids=[marker.kwargs["id"]], indirect=True)


@pytest.fixture
def prediction(request: pytest.FixtureRequest, atlas_session: AtlasSession) -> Iterator[Prediction]:
    """The marked prediction this test declares (``atlas._predict.Prediction``), with the run's profile active for
    the body (``atlas.stats`` resamples as many times as it says)."""
    marker = request.node.get_closest_marker("prediction")
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the prediction fixture without "
                                "@pytest.mark.prediction(id=..., claim=..., criterion=..., needs=(...))")
    request.node.user_properties.append(("atlas_prediction", marker.kwargs.get("id")))
    prediction = Prediction(atlas_session, request.node, **marker.kwargs)
    prediction.gather()
    with using_profile(atlas_session.profile):
        yield prediction


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """The verdict is stored here, once the body has ended, and the report follows what was stored: a body that
    failed after concluding voids its verdict (stored as ``error``, reported as the failure it is); a body that
    swallowed its verdict's exception still reports the verdict it concluded."""
    outcome = yield
    report = outcome.get_result()
    if call.when != "call":
        return
    prediction = getattr(item, "funcargs", {}).get("prediction")
    if not isinstance(prediction, Prediction):
        return
    raised = call.excinfo
    own = raised is not None and raised.errisinstance((Inconclusive, RefutedVerdict))
    failure = None if raised is None or own else f"{raised.typename}: {str(raised.value).splitlines()[0] if str(raised.value) else ''}"
    stored = prediction.store_verdict(failure=failure)
    report.user_properties = list(item.user_properties)
    if stored is None:
        if raised is None and not prediction.concluded:
            report.outcome = "failed"
            report.longrepr = (f"NO VERDICT {prediction.id}: the body returned without prediction.conclude(...) "
                               "or prediction.not_run(...); nothing was stored and the prediction did not pass")
            report.user_properties.append(("atlas_outcome", "no verdict"))
        return
    message = prediction.verdict["reason"]
    if stored is Outcome.REFUTED:
        report.outcome = "failed"
        report.longrepr = str(raised.value) if own else f"REFUTED {prediction.id} on {prediction.model_name}: {message}"
    elif stored in (Outcome.INCONCLUSIVE, Outcome.NO_EFFECT):
        report.outcome = "passed"
        report.sections.append(("atlas verdict", str(raised.value) if own else message))
        report.longrepr = None


class _InconclusiveAgain:
    """An inconclusive verdict reports as passed (it is not a failure), yet is not settled: after pytest's cache
    has taken the report, it is kept among the last failures, so ``--lf`` runs it again."""

    def __init__(self, lastfailed_plugin):
        self.lastfailed = lastfailed_plugin.lastfailed

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and dict(report.user_properties).get("atlas_outcome") == "inconclusive":
            self.lastfailed[report.nodeid] = True


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    if report.when != "call":
        return None
    outcome = dict(report.user_properties).get("atlas_outcome")
    return {"inconclusive": ("inconclusive", "I", "INCONCLUSIVE"), "refuted": ("refuted", "R", "REFUTED"),
            "no_effect": ("no effect", "0", "NO EFFECT"), "no verdict": ("no_verdict", "N", "NO VERDICT")}.get(outcome)


class _ReportWriter:
    """Renders the report once at the end of a run in which any prediction ran.

    Reports reach the controller from xdist workers too, so it alone writes."""

    def __init__(self, config: pytest.Config):
        from datetime import datetime, timezone

        self.config, self.ran, self.path, self.runs, self.error = config, False, None, [], None
        self.results: list[tuple[str, str]] = []  # (line, outcome) of the results table
        self.started = datetime.now(timezone.utc)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if any(key == "atlas_prediction" for key, _ in report.user_properties):
            self.ran = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput") or not self.ran:
            return
        from ._store import ProtocolLog
        from ._report import render_report
        from ._store import SESSION_COMPLETE, Store

        try:
            store = Store(_option(self.config, "db"))
            if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):  # ended by itself
                store_adjustments(store, self.config.stash[_SESSION])
                ProtocolLog(store, self.config.stash[_SESSION]).write(
                    SESSION_COMPLETE, instrument="", model="", corpus_hash="",
                    reason=f"{session.testscollected} tests collected, exit status {int(exitstatus)}")
            self.runs = _run_lines(store, store.events(since=self.started), self.config.stash.get(_ESTIMATES, {}))
            self.results = _result_lines(store, self.config.stash[_SESSION])
            self.path = render_report(store, _reports_dir(self.config))
        except AtlasError as exc:
            self.error = str(exc)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for category in ("refuted", "no_verdict"):
            reports = terminalreporter.stats.get(category, [])
            if reports:
                terminalreporter.write_sep("=", category.replace("_", " ").upper())
                for report in reports:
                    terminalreporter.write_line(f"{report.nodeid}: {report.longrepr}")
        if self.path is not None:
            terminalreporter.write_sep("-", "Atlas")
            for line in self.runs:
                terminalreporter.write_line(line)
            terminalreporter.write_sep("-", "Atlas results")
            for line, outcome in self.results:
                terminalreporter.write_line(line, **_COLOUR.get(outcome, {}))
            store = shown_url(_option(self.config, "db"))
            terminalreporter.write_line(f"verdict report: {self.path}  (store: {store})")
        if self.error is not None:
            terminalreporter.write_sep("-", "Atlas")
            terminalreporter.write_line(f"no verdict report: {self.error}")


def _run_lines(store, events, estimates: dict[str, float]) -> list[str]:
    """One line per instrument run this pytest run asked for (every xdist worker's too): what was measured,
    reused, failed or refused, for which predictions, the measurement's wall time, and beside it what the plan's
    cost model expected of a run measured in this process (``estimates``: run id -> seconds) or of a Lab training
    (its recipe's timed training, ``atlas._costs.training_estimate``)."""
    rows, seen = [], {}
    for e in events:
        if not e.instrument or (e.action == "reused" and e.reason == "measured earlier in this session"):
            continue
        seen.setdefault((e.action, e.instrument, e.model, e.run_id), []).append(
            e.prediction or ("the predictions on it" if e.instrument == "lab" else "-"))  # a Lab run: trained to load
    for (action, instrument, model, run_id), predictions in seen.items():
        run = store.run(run_id) if run_id else None
        took = (f"{(run.ended_at - run.started_at).total_seconds():.1f} s" if run is not None and action == "measured"
                else "-")  # a reused run took no time here (its own duration was another session's)
        expected = estimates.get(run_id) if action == "measured" else None
        if run is not None and action == "measured" and instrument == "lab":  # a training: its recipe's timing
            expected = (training_estimate(run.corpus, run.settings.get("steps", 0)) or (None,))[0]
        planned = "-" if expected is None else duration(expected)
        rows.append((action, instrument, model, took, planned, ", ".join(sorted(set(predictions)))))
    return [f"  {line}" for line in aligned(("step", "instrument", "model", "took", "planned", "for"), rows,
                                            right={3, 4})] if rows else []


#: the results table's colour of each outcome (inconclusive apart from supported: it is not a pass)
_COLOUR = {"supported": {"green": True}, "refuted": {"red": True, "bold": True}, "inconclusive": {"yellow": True},
           "no_effect": {"cyan": True}, "error": {"red": True}}

_RESULT_COLUMNS = ("prediction", "model", "outcome", "effect", "95% CI", "criterion", "n", "reason")


def _result_lines(store, session: str) -> list[tuple[str, str]]:
    """The results table of this run, like lm-eval's: one row per verdict it stored (every xdist worker's too),
    the cells ``atlas verdicts`` prints (``atlas._flips.verdict_cells``), with each row's outcome for its colour."""
    from ._flips import verdict_cells, verdict_json

    adjustments = store.adjustments()
    records = [verdict_json(v, adjustments.get(v.id)) for v in store.verdicts(session=session)]
    rows = [tuple(verdict_cells(r)[c] for c in _RESULT_COLUMNS) for r in records]
    lines = aligned(_RESULT_COLUMNS, rows, right={3}) if rows else []
    return [(lines[0], "")] + [(line, r["outcome"]) for line, r in zip(lines[1:], records)] if lines else []


def _reports_dir(config: pytest.Config) -> Path:
    path = Path(_option(config, "reports"))
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path
