"""What a prediction module talks to: the ``prediction`` fixture and the evidence CISP gathered for it.

A prediction is a test function marked with ``@pytest.mark.prediction(...)``
(id, claim, source, form, model, criterion, needs). Before its body runs, CISP
gathers the declared inputs (``needs``, in order) on its model(s) and corpus;
the body reads them from ``prediction.evidence`` (read-only) and ends with
``prediction.conclude(...)``::

    @pytest.mark.prediction(id="...", claim="...", source="...", form="general",
                            criterion=Criterion("ratio", ">", 2.0, scale="ratio"), needs=("perplexity",))
    def test_claim(prediction):
        tables = prediction.evidence["perplexity"]       # {table: DataFrame}, gathered already
        ...
        prediction.conclude(effect=r, ci=(lo, hi), n=n, evidence={...})

``conclude`` judges the evidence by the criterion and stores the verdict with the
prediction's version (criterion *and* analysis code, ``atlas._version``) and the git
commit of the code: supported passes, refuted gets its own status (``R``) with the
evidence in the message, inconclusive its own (``I``); a model that cannot be
loaded makes the prediction "not run" (a skip), never a pass, and so does an input
that CISP refused. A body that returns without a verdict is reported as "NO VERDICT",
never as passed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd
import pytest

from ._cisp import RunResult, RunSpec, SummarySpec, resolve, run_spec
from ._corpus import Corpus, load_corpus
from ._costs import estimate
from ._errors import AtlasError, Inconclusive, RefutedVerdict, SequencingRefused, SettingsError, Unavailable
from ._models import LoadedModel, load_model
from ._profiles import DEFAULT_PROFILE, PROFILES, Profile
from ._public import public
from ._stats import bootstrap_ci, one_sided_p
from ._store import Adjustment, ProtocolLog, Run, Store, VerdictRecord
from ._table import duration
from ._verdict import Criterion, Outcome, holm_outcomes
from ._version import code_version, prediction_version
from .instruments import INSTRUMENTS

__all__ = ["SECOND_OF_PAIR", "AtlasSession", "Evidence", "Prediction", "store_adjustments", "version_of"]

#: a setting value in ``needs`` that stands for the pair's second model: the instrument runs once, on the first
#: model, towards the second (e.g. ``needs={"interpolation": {"other": SECOND_OF_PAIR}}``, the line from A to B);
#: models (A1, B1, A2, B2, ...) are consecutive pairs, each measured on its first model towards its second
SECOND_OF_PAIR = "<the second model of the pair>"
#: why a pairwise prediction without a pair is not run
NO_PAIR = ("no model pair given: pass --atlas-pair BASE,OTHER (e.g. mistral-7b,mistral-7b-instruct); the built-in "
           "Lab pair needs --atlas-model smollm2-135m-instruct")


@dataclass
class AtlasSession:
    """State shared by every prediction of one pytest run: options, store, loaded models, measurements."""

    model_name: str
    corpus_path: str
    db_url: str = field(repr=False)  # may hold a password: shown only as ``Store.shown_url``
    reports_dir: Path
    device: str = "auto"
    dtype: str = "auto"
    device_map: str = "none"  # "auto": a model too large for one device is split across devices (``load_model``)
    profile: Profile = PROFILES[DEFAULT_PROFILE]
    pair: tuple[str, str] | None = None  # (base, other) for pairwise general forms
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: the terminal, while a run measures: a context in which output reaches it (pytest captures it otherwise),
    #: a writer of one line, and whether it is a TTY (live progress bars; plain lines otherwise)
    terminal: Callable[[], AbstractContextManager] = nullcontext
    say: Callable[[str], None] | None = None
    live: bool = False
    #: the Lab resolver (``lab:`` name -> checkpoint directory, trained and stored when it is not on disk;
    #: ``atlas.lab.LabRuns``), injected by the plugin; without one a Lab model is unavailable
    lab: Callable[[str], str] | None = None
    #: the cost model's estimate of each run this session measured: run id -> seconds (the run's summary shows it)
    estimates: dict[str, float] = field(default_factory=dict)
    _store: Store | None = None
    _models: dict = field(default_factory=dict)
    _corpus: Corpus | None = None
    _runs: dict = field(default_factory=dict)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_url)
        return self._store

    @property
    def log(self) -> ProtocolLog:
        return ProtocolLog(self.store, self.session_id)

    @property
    def corpus(self) -> Corpus:
        """The selected corpus, sampled to the profile's passages per domain."""
        if self._corpus is None:
            self._corpus = load_corpus(self.corpus_path).sample(self.profile.passages_per_domain)
        return self._corpus

    def model(self, name: str) -> LoadedModel:
        """Load once per session; a model that cannot be loaded here (its weights, or the device asked for:
        ``Unavailable``) raises the same error every time it is asked for."""
        if name not in self._models:
            try:
                with self.terminal():  # a Lab run may train first: its progress reaches the terminal
                    self._models[name] = load_model(name, device=self.device, dtype=self.dtype, lab=self.lab,
                                                     device_map=self.device_map)
            except Unavailable as exc:
                self._models[name] = exc
        found = self._models[name]
        if isinstance(found, Unavailable):
            raise found
        return found

    def corpus_for(self, instrument: str) -> Corpus:
        """The selected corpus as the profile samples it for ``instrument``."""
        per_domain = self.profile.per_domain.get(instrument)
        return self.corpus if per_domain is None else self.corpus.sample(per_domain)

    def settings_for(self, instrument: str, declared: dict) -> dict:
        """The one merge of settings a prediction's run gets: the profile's, then the prediction's declared ones."""
        return {"bootstrap_resamples": self.profile.bootstrap_resamples,
                **self.profile.settings.get(instrument, {}), **declared}

    def resolve(self, instrument: str, lm: LoadedModel, declared: dict
                ) -> tuple[RunSpec, SummarySpec | None, Corpus, dict[str, LoadedModel]]:
        """A prediction's input resolved once (``atlas._cisp.resolve``): its RunSpec and SummarySpec on ``lm`` and
        the profile's corpus and settings for ``instrument``, with that corpus and the other models of a pairwise
        instrument (loaded). ``measure`` runs what it resolves; the plan (``atlas._plan``) lists it."""
        corpus, settings = self.corpus_for(instrument), self.settings_for(instrument, declared)
        models = INSTRUMENTS[instrument].models
        others = {m: self.model(v) for m, v in settings.items() if m in models and v}
        spec, summary = resolve(instrument, lm, corpus, {k: v for k, v in settings.items() if k not in models},
                                others)
        return spec, summary, corpus, others

    def measure(self, instrument: str, lm: LoadedModel, declared: dict, prediction: str | None = None) -> RunResult:
        """Run (or reuse) ``instrument`` on ``lm`` and the profile's corpus for it, resolved once into a RunSpec."""
        spec, summary, corpus, others = self.resolve(instrument, lm, declared)
        key = (spec.key, None if summary is None else summary.key(""))
        if key in self._runs:
            result = self._runs[key]
            self.log.write("reused", instrument=instrument, model=lm.name, corpus_hash=corpus.hash,
                           prediction=prediction, run_id=result.run.id, spec_key=spec.key,
                           reason="measured earlier in this session")
            return result
        with self.terminal():
            started = time.perf_counter()
            self._runs[key] = run_spec(self.store, spec, summary, lm, corpus, others, log=self.log,
                                       prediction=prediction, progress=self.live)
            result = self._runs[key]
            expected = None if result.reused else estimate(instrument, lm.model, len(corpus.passages))
            if expected is not None:
                self.estimates[result.run.id] = expected[0]
            if self.say is not None:
                self.say(f"{'reused' if result.reused else 'measured'} {instrument} on {lm.name} "
                         f"({corpus.name}, {len(corpus.passages)} passages): {time.perf_counter() - started:.1f} s"
                         + (f", stored run {result.run.id[:8]}" if result.reused else "")
                         + ("" if expected is None else f" (planned {duration(expected[0])})"))
        return self._runs[key]


class Evidence(Mapping):
    """The tables CISP gathered for a prediction, read-only.

    ``evidence["ablation"]`` is ``{table: DataFrame}`` of that instrument on the
    prediction's (first) model; ``evidence["perplexity", "gpt2"]`` on another of its
    models. Each read hands out copies: the body cannot change what was stored.
    Asking for an instrument the prediction did not declare is refused by CISP.
    """

    def __init__(self, prediction: Prediction):
        self._prediction = prediction
        self._results: dict[tuple[str, str], RunResult] = {}

    def __getitem__(self, key) -> Mapping[str, pd.DataFrame]:
        instrument, model = key if isinstance(key, tuple) else (key, None)
        model = model or self._prediction.model_names[0]
        if (instrument, model) not in self._results:
            self._prediction.refuse_undeclared(instrument, model)
        tables = self._results[instrument, model].tables
        return MappingProxyType({name: df.copy() for name, df in tables.items()})

    def __iter__(self) -> Iterator:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def result(self, instrument: str, model: str | None = None) -> RunResult:
        return self._results[instrument, model or self._prediction.model_names[0]]


class Prediction:
    """One marked prediction test: its declaration, and the evidence CISP gathered for it."""

    def __init__(self, session: AtlasSession, node: pytest.Item, *, id: str, claim: str, criterion: Criterion,
                 needs: tuple[str, ...] | dict[str, dict], source: str = "", form: str = "general",
                 model: str | tuple[str, ...] | None = None, default_pair: tuple[str, str] | None = None,
                 nulls: dict | None = None, alternative=None):
        """``needs``: the instruments whose tables are the evidence, in the order CISP gathers them, as
        names or as ``{name: settings}`` when the evidence needs settings other than the profile's;
        ``model``: a name (default: the session's selected model), a tuple of names for a named
        comparison, or ``"pair"`` for the session's ``--atlas-pair``; ``default_pair``: the pair used
        when none is given and the session's model is its base (e.g. the offline model and a Lab
        fine-tune of it); ``nulls`` ({name: simulator}) and ``alternative`` (a simulator at the smallest effect
        of interest): the evidence ``atlas calibrate`` judges to measure the false "supported" rate and power
        (``atlas._calibrate``); they are not used when the prediction runs."""
        if form not in ("named", "general"):
            raise SettingsError(f"prediction {id!r}: form must be 'named' or 'general', not {form!r}")
        unknown = [n for n in needs if n not in INSTRUMENTS]
        if unknown or not needs:
            raise SettingsError(f"prediction {id!r}: needs= must name instruments of the registry "
                                f"({', '.join(INSTRUMENTS)}); unknown: {unknown or 'none given'}")
        self.session, self.node = session, node
        self.id, self.claim, self.criterion, self.source, self.form = id, claim, criterion, source, form
        self.needs = _needs(needs)
        self.model_names = model_names(session, model, default_pair)
        self.model_name = " vs ".join(self.model_names) or "(no model pair given)"
        self.evidence = Evidence(self)
        self.verdict: dict | None = None  # what conclude() judged, stored by the plugin once the body has ended
        self.concluded = False  # a verdict (or "not run") was stored
        self.version = version_of(node.function, criterion, self.needs)

    @property
    def corpus(self) -> Corpus:
        return self.session.corpus

    @property
    def profile(self) -> Profile:
        return self.session.profile

    @property
    def runs(self) -> dict[str, Run]:
        """The runs whose tables are the evidence, by id."""
        return {r.run.id: r.run for r in self.evidence._results.values()}

    def bootstrap(self, samples, statistic, *, paired: bool) -> tuple[float, float]:
        """``atlas.bootstrap_ci`` with the profile's number of resamples."""
        return bootstrap_ci(samples, statistic, paired=paired, n_resamples=self.profile.bootstrap_resamples)

    def steps(self) -> list[tuple[str, str, dict]]:
        """(model, instrument, declared settings) of every input ``gather`` measures, in its order: each needed
        instrument on each model, and one with a ``SECOND_OF_PAIR`` setting on each pair's first model towards
        its second. The plan (``atlas._plan``) lists the same steps."""
        return steps(self.id, self.model_names, self.needs)

    def gather(self) -> None:
        """CISP sequencing: measure (or reuse) every needed instrument on every model of the prediction, in the
        declared order (``steps``), before the body runs. An unavailable model makes the prediction "not run"; an
        input that CISP refused, that failed on this model's weights, or whose instrument crashed, refuses the
        prediction ("not run: refused by CISP", with the reason): a crash never looks like a refutation."""
        if not self.model_names:
            self.not_run(NO_PAIR)
        try:
            models = {name: self.session.model(name) for name in self.model_names}
        except Unavailable as exc:  # weights or a device not on this machine
            self.not_run(str(exc))
        for name, instrument, declared in self.steps():
            try:
                self.evidence._results[instrument, name] = self.session.measure(
                    instrument, models[name], declared, prediction=self.id)
            except Unavailable as exc:  # the other model of a pairwise instrument
                self.not_run(str(exc))
            except Exception as exc:  # noqa: BLE001 -- a crashed input is "not run: refused", never a refutation
                self._log("refused", instrument, name, f"its input failed: {type(exc).__name__}")
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                self.not_run(f"refused by CISP: the input {instrument!r} on {name} failed "
                             f"({type(exc).__name__}: {first_line}); the protocol log has the step")

    def refuse_undeclared(self, instrument: str, model: str):
        """Evidence a pre-registration did not name is refused (and logged)."""
        self._log("refused", instrument, model, f"it is not among the declared inputs {list(self.needs)}; "
                                                "declare it in the prediction's marker")
        exc = SequencingRefused(f"CISP refuses {self.id}: it asked for {instrument!r} on {model}, which is not "
                                f"among its declared inputs needs={list(self.needs)} and models {list(self.model_names)}")
        pytest.fail(str(exc), pytrace=False)

    def _log(self, action: str, instrument: str, model: str, reason: str) -> None:
        self.session.log.write(action, instrument=instrument, model=model, corpus_hash=self.corpus.hash,
                               prediction=self.id, reason=reason)

    def not_run(self, reason: str):
        if self.verdict is not None:
            raise AtlasError(f"{self.id}: not_run(...) after conclude(...): a prediction has one outcome")
        self._store(Outcome.NOT_RUN, reason=reason)
        pytest.skip(f"not run: {reason}")

    def conclude(self, *, effect: float, ci: tuple[float, float], n: int, evidence: dict | None = None,
                 reason: str = "") -> Outcome:
        """Judge ``effect`` and its CI by the criterion and report it to pytest; the plugin stores the verdict
        once the body has ended (a body that fails after concluding voids it: stored as ``error``).

        ``n`` counts the criterion's unit; a CI that says which unit it resampled (``Interval.unit``) must
        resample the criterion's. A second ``conclude`` is an error: a prediction has one verdict."""
        if self.verdict is not None:
            raise AtlasError(f"{self.id}: conclude(...) was called twice; a prediction has one verdict")
        unit = getattr(ci, "unit", None)
        if unit is not None and unit != self.criterion.unit:
            raise SettingsError(f"{self.id}: the criterion's unit is {self.criterion.unit!r} but its CI resampled "
                                f"{unit!r}; resample the claim's own unit (or declare unit={unit!r})")
        outcome, why = self.criterion.judge_with_reason(effect, *ci)
        summary = (f"{self.criterion.statistic} = {_num(effect)}, 95% CI [{_num(ci[0])}, {_num(ci[1])}], "
                   f"n = {n} {self.criterion.unit}")
        reason = reason or f"{summary}: {why}"
        evidence = {**(evidence or {}), "n_unit": self.criterion.unit,
                    "scope": self.criterion.scope_of(self.model_names)}
        self.verdict = dict(outcome=outcome, effect=_plain(effect), ci=(_plain(ci[0]), _plain(ci[1])), n=n,
                            evidence=evidence, reason=reason)
        self._interval = ci  # its p-value is read when the verdict is stored (store_verdict)
        if outcome is Outcome.REFUTED:
            raise RefutedVerdict(f"REFUTED {self.id} on {self.model_name}: {reason}\ncriterion: {self.criterion}\n"
                                 f"evidence: {evidence}")
        if outcome in (Outcome.INCONCLUSIVE, Outcome.NO_EFFECT):
            raise Inconclusive(f"{outcome.value.replace('_', ' ').upper()} {self.id} on {self.model_name}: {reason}")
        return outcome

    def store_verdict(self, failure: str | None = None) -> Outcome | None:
        """Store the concluded verdict (called by the plugin when the body has ended); ``failure``: the body
        failed after concluding, so the verdict is void and stored as ``error`` with the failure as its reason."""
        if self.verdict is None or self.concluded:
            return None
        verdict = dict(self.verdict)
        p = one_sided_p(self._interval, self.criterion.threshold, self.criterion.direction)
        if p is not None:  # for the multiple-comparison adjustment across a session (Holm)
            verdict["evidence"] = {**verdict["evidence"], "p_value": p}
        if failure is not None:
            verdict.update(outcome=Outcome.ERROR, reason=f"void: the body failed after concluding ({failure}); "
                                                         f"the verdict it had concluded was {verdict['outcome']}")
        self._store(**verdict)
        return verdict["outcome"]

    def _store(self, outcome: Outcome, *, effect=None, ci=(None, None), n=None, evidence=None, reason=""):
        corpus = self.corpus_description()
        self.session.store.write_verdict(VerdictRecord(
            prediction=self.id, version=self.version, form=self.form, claim=self.claim, source=self.source,
            model=self.model_name, corpus=corpus.get("name", ""), corpus_hash=corpus.get("hash", ""),
            profile=self.profile.name, code_version=code_version(str(self.node.path)),
            outcome=outcome.value, effect=effect, ci_low=ci[0], ci_high=ci[1], n=n,
            criterion=self.criterion.as_dict(), criterion_hash=self.criterion.hash, reason=reason,
            evidence={**(evidence or {}), "corpus": corpus, "profile": self.profile.name, "inputs": self.inputs()},
            run_ids=list(self.runs), session=self.session.session_id))
        self.concluded = True
        # junit XML carries the verdict: outcome, effect, CI, n and version
        self.node.user_properties += [("atlas_outcome", outcome.value), ("atlas_version", self.version),
                                      *[(f"atlas_{k}", float(v)) for k, v in (("effect", effect), ("ci_low", ci[0]),
                                                                               ("ci_high", ci[1]), ("n", n))
                                        if v is not None]]  # plain floats: xdist sends them between processes

    def inputs(self) -> list[dict]:
        """Every sample size the evidence used: per input run, its instrument, models, corpus and settings."""
        return [{"run": r.run.id, "instrument": r.run.instrument, "model": r.run.model, "others": r.run.others,
                 "corpus": r.run.corpus, "spec": r.spec.key if r.spec else r.run.settings_hash,
                 "settings": {k: v for k, v in r.run.settings.items() if k != "seed"},
                 "summary": r.summary.settings if r.summary else {}}
                for r in self.evidence._results.values()]

    def corpus_description(self) -> dict:
        try:
            corpus = self.corpus
        except AtlasError:  # a broken corpus must not hide the verdict being stored
            return {"path": self.session.corpus_path}
        return {"name": corpus.name, "hash": corpus.hash, "passages": len(corpus.passages)}



def version_of(function, criterion: Criterion, needs) -> str:
    """A prediction's version (``atlas._version``): its criterion, its analysis, and the instruments it needs."""
    needs = _needs(needs)
    return prediction_version(function, criterion, needs, {n: INSTRUMENTS[n].version for n in needs},
                              {"prediction": Prediction})


def model_names(session: AtlasSession, model: str | tuple[str, ...] | None = None,
                default_pair: tuple[str, str] | None = None) -> tuple[str, ...]:
    """The models a prediction declared with ``model`` and ``default_pair`` is measured on in ``session`` (see
    ``Prediction``); none for ``"pair"`` when no pair is given and the default pair's base is not the model."""
    if model == "pair":
        built_in = default_pair if default_pair and default_pair[0] == session.model_name else None
        return session.pair or built_in or ()
    if isinstance(model, (tuple, list)):
        return tuple(model)
    return (model or session.model_name,)


def steps(pid: str, names: tuple[str, ...], needs) -> list[tuple[str, str, dict]]:
    """``Prediction.steps`` of a prediction ``pid`` on the models ``names`` with its ``needs=``."""
    found = []
    for i, name in enumerate(names):
        for instrument, declared in _needs(needs).items():
            if SECOND_OF_PAIR in declared.values():  # a line from each pair's first model to its second
                if i % 2:
                    continue
                if i + 1 == len(names):
                    raise SettingsError(f"{pid}: {name} has no second model: {instrument} measures "
                                        "consecutive pairs of the models (A1, B1, A2, B2, ...)")
                declared = {k: names[i + 1] if v == SECOND_OF_PAIR else v for k, v in declared.items()}
            found.append((name, instrument, declared))
    return found


def _needs(needs) -> dict[str, dict]:
    """A marker's ``needs=`` as {instrument: settings}: names alone ask for the profile's settings."""
    return dict(needs) if isinstance(needs, dict) else {n: {} for n in needs}


def store_adjustments(store: Store, session: str) -> int:
    """Store Holm's adjusted outcome of every general-form verdict a (complete) session judged, in one
    transaction: ``atlas verdicts``, ``atlas diff`` and the report read the same record. Returns how many."""
    adjusted = holm_outcomes(store.verdicts(session=session))
    store.write_all([Adjustment(verdict_id=i, session=session, family=a["family"], p_adjusted=a["p_adjusted"],
                                outcome=a["outcome"]) for i, a in adjusted.items()])
    return len(adjusted)


def _num(value) -> str:
    """A number for a verdict's message (None and non-numbers as they are: they make it inconclusive)."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return repr(value)


def _plain(value):
    """A finite or non-finite float, or None for what is not a number (what the store and junit XML can hold)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


public("atlas", AtlasSession, Evidence, Prediction)
