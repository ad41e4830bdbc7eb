"""CISP, the protocol layer: every instrument run goes through ``run_instrument``.

It enforces what the Framework asks of a run:

* **one resolved spec** -- instrument defaults (read from the entry function's
  signature), the statistics defaults, a profile's settings, a prediction's
  ``needs`` and call arguments are merged once, by ``resolve``, into a frozen
  ``RunSpec``: instrument and version, every model's name and revision (the other
  models of a pairwise instrument too), corpus hash, dtype, every measurement
  setting. Its ``key`` is the one key the session cache, the store's reuse rule
  and the protocol log use. Summary settings (bootstrap resamples) form a
  ``SummarySpec`` of their own: summary tables are derived from the stored primary
  table, so new summary settings never repeat a measurement;
* **isolation** -- a run starts from the model as it was loaded (its checksum
  must equal the one taken at load time), seeds are fixed, and afterwards the
  parameters (per-parameter sums in float64), hooks, attention implementation,
  grad mode and train mode must be as before; a run that leaves the model changed
  is stored as failed, never as a valid measurement;
* **validation** -- a model whose weights are not all finite is refused before it
  is measured; every table is checked against its schema (great-expectations:
  finite numbers, at least one row) before anything is written, then held in its
  schema's dtypes (``atlas._schema.coerce``); a table that fails, or an instrument
  that crashes while measuring, is stored as a failed run with the error, and no
  measurement row is written. Bad input an instrument finds before it measures (a
  setting out of range, a passage longer than the model's context) is refused:
  nothing is stored but the protocol-log step, since no measurement was attempted;
* **provenance and reuse** -- a run records every model's revision, corpus hash,
  settings and their key, device, dtype, seed, package versions and git commit; a
  complete stored run with the same key is reused, once it verifies against its
  seal (``Store.check``: rows inserted under it, or a forged later run, are measured
  afresh and the protocol log says why); a run of the same instrument
  under an older version or another model revision is *stale* and never reused;
* **sequencing** -- every step (measured, reused, failed, refused) is written to
  the protocol log (``ProtocolLog``, the one writer of ``ProtocolEvent`` rows) of
  its session, in order, in the same transaction as the run it is about, so a kill
  never leaves a run the log does not show. Predictions declare the instruments they need;
  ``atlas._predict`` gathers those inputs through CISP before the body runs and
  refuses a prediction whose input failed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ._anatomy import hook_count
from ._bounds import Declared, at_least, below, check_settings
from ._corpus import Corpus
from ._costs import estimate
from ._errors import BadInput, IsolationBreach, NotFinite, SchemaViolation, SettingsError, SplitRefused
from ._provenance import git_commit_of_atlas, package_versions, settings_hash
from ._models import LoadedModel, load_model, model_checksum, nonfinite_parameters
from ._profiles import DEFAULT_PROFILE, PROFILES
from ._public import public
from ._schema import coerce, validate_table
from ._store import Derivation, ProtocolEvent, ProtocolLog, Run, Store, utcnow
from ._table import duration
from .instruments import INSTRUMENTS, Instrument
from .lab import LabRuns

__all__ = ["RunResult", "RunSpec", "SummarySpec", "check_instrument_settings", "model_checksum", "resolve",
           "reusable", "run_instrument", "run_spec", "split_refusal"]

#: settings every instrument takes: the summaries' resamples (by default the default profile's), and the seed of the
#: measurement and of its summaries (numpy takes seeds below 2**32)
STATISTICS = {s.name: s for s in (
    Declared("bootstrap_resamples", PROFILES[DEFAULT_PROFILE].bootstrap_resamples, int, bounds=(at_least(1),)),
    Declared("seed", 0, int, bounds=(at_least(0), below(2 ** 32))))}
STATISTICS_DEFAULTS = {name: s.default for name, s in STATISTICS.items()}


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a measurement's numbers, resolved once (``resolve``)."""

    instrument: str
    version: str
    model: str
    model_revision: str
    corpus: str  # the corpus's name as sampled (for people; the hash is what counts)
    corpus_hash: str
    dtype: str
    settings: tuple[tuple[str, object], ...]  # every measurement setting, the seed included; other models by name
    others: tuple[tuple[str, str, str], ...] = ()  # (setting, model name, revision) of a pairwise instrument

    @property
    def key(self) -> str:
        """The key of the run: the session cache, the store's reuse rule and the protocol log all use it."""
        return settings_hash({"instrument": self.instrument, "version": self.version, "model": self.model,
                              "model_revision": self.model_revision, "corpus_hash": self.corpus_hash,
                              "dtype": self.dtype, "settings": dict(self.settings),
                              "others": [list(o) for o in self.others]})

    @property
    def measure_settings(self) -> dict:
        return dict(self.settings)


@dataclass(frozen=True)
class SummarySpec:
    """The settings of a run's summary tables; a derivation of one stored run is keyed by ``key(run_id)``."""

    instrument: str
    version: str
    n_resamples: int
    seed: int

    @property
    def settings(self) -> dict:
        return {"bootstrap_resamples": self.n_resamples, "seed": self.seed}

    def key(self, run_id: str) -> str:
        return settings_hash({"run": run_id, "instrument": self.instrument, "version": self.version, **self.settings})


@dataclass
class RunResult:
    run: Run
    tables: dict[str, pd.DataFrame]  # measured and summary tables, in their schemas' dtypes
    reused: bool  # the measurement was a stored run
    spec: RunSpec | None = None
    summary: SummarySpec | None = None


def instrument_named(name: str) -> Instrument:
    try:
        return INSTRUMENTS[name]
    except KeyError:
        raise SettingsError(f"no instrument {name!r}; known: {', '.join(INSTRUMENTS)}") from None


def check_instrument_settings(instrument: str, settings: dict) -> Instrument:
    """The instrument, once every one of ``settings`` is one it takes and a value its declaration allows
    (``atlas._bounds``): a ``SettingsError`` naming the first that is not. ``resolve`` calls it, and the
    ``atlas measure`` command before it loads the model."""
    inst = instrument_named(instrument)
    unknown = set(settings) - set(inst.defaults) - set(STATISTICS_DEFAULTS)
    if unknown:
        raise SettingsError(f"instrument {instrument!r} has no setting(s) {sorted(unknown)}; "
                            f"it takes {sorted({**inst.defaults, **STATISTICS_DEFAULTS})}")
    check_settings({**inst.settings, **STATISTICS}, settings, f"instrument {instrument!r}")
    return inst


def resolve(instrument: str, lm: LoadedModel, corpus: Corpus, settings: dict,
            others: dict[str, LoadedModel] | None = None) -> tuple[RunSpec, SummarySpec | None]:
    """Merge the instrument's defaults, the statistics defaults and ``settings`` (checked first:
    ``check_instrument_settings``) into a RunSpec (and the SummarySpec of its summary tables, if it has any).
    ``others``: the loaded models of a pairwise instrument's model settings."""
    inst, others = check_instrument_settings(instrument, settings), others or {}
    full = {**inst.defaults, **STATISTICS_DEFAULTS, **settings}
    measured = {k: full[k] for k in inst.defaults if k not in inst.models}
    measured.update({m: others[m].name if m in others else None for m in inst.models}, seed=full["seed"])
    spec = RunSpec(inst.name, inst.version, lm.name, lm.revision, corpus.name, corpus.hash, lm.dtype,
                   tuple(sorted(measured.items())), tuple((m, o.name, o.revision) for m, o in sorted(others.items())))
    summary = (SummarySpec(inst.name, inst.version, int(full["bootstrap_resamples"]), int(full["seed"]))
               if inst.summaries else None)
    return spec, summary


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_others(inst: Instrument, settings: dict, lm: LoadedModel,
                 load: Callable[[str], LoadedModel] | None) -> tuple[dict, dict[str, LoadedModel]]:
    """Split a pairwise instrument's model settings off ``settings``, loading those given by name."""
    device_map = "none" if lm.placement is None else "auto"
    load = load or (lambda name: load_model(name, device=lm.device, dtype=lm.dtype, device_map=device_map))
    rest = {k: v for k, v in settings.items() if k not in inst.models}
    others = {m: v if isinstance(v, LoadedModel) else load(v) for m, v in settings.items() if m in inst.models and v}
    return rest, others


def run_instrument(store: Store, lm: LoadedModel, corpus: Corpus, instrument: str, *, reuse: bool = True,
                   progress: bool = True, session: str | ProtocolLog = "", prediction: str | None = None,
                   load: Callable[[str], LoadedModel] | None = None, **settings) -> RunResult:
    """Measure ``instrument`` on ``lm`` and ``corpus``; validate, store and return its tables.

    ``settings`` override the instrument's defaults and the statistics defaults
    (``bootstrap_resamples``, ``seed``); a pairwise instrument's model settings take a
    model name (loaded with ``load``, by default ``load_model`` on the same device and
    dtype) or a ``LoadedModel``. ``session`` (an id, or the session's ``ProtocolLog``)
    and ``prediction`` label the protocol-log entries. Raises ``SchemaViolation`` or
    ``IsolationBreach`` after storing the run as failed.
    """
    rest, others = _load_others(instrument_named(instrument), settings, lm, load)
    spec, summary = resolve(instrument, lm, corpus, rest, others)
    log = session if isinstance(session, ProtocolLog) else ProtocolLog(store, session)
    return run_spec(store, spec, summary, lm, corpus, others, log=log, reuse=reuse, progress=progress,
                    prediction=prediction)


def run_spec(store: Store, spec: RunSpec, summary: SummarySpec | None, lm: LoadedModel, corpus: Corpus,
             others: dict[str, LoadedModel], *, log: ProtocolLog, reuse: bool = True, progress: bool = True,
             prediction: str | None = None) -> RunResult:
    """Run (or reuse) a resolved spec: what ``run_instrument`` does once the settings are resolved."""
    inst, instrument = instrument_named(spec.instrument), spec.instrument

    def step(action: str, run_id: str | None = None, reason: str = "") -> ProtocolEvent:
        return log.event(action, instrument=instrument, model=lm.name, corpus_hash=corpus.hash,
                         prediction=prediction, run_id=run_id, spec_key=spec.key, reason=reason)

    store.check_writable()  # every step is written: a store that refuses writes refuses the run before it measures
    for model in (lm, *others.values()):
        bad = nonfinite_parameters(model.model)
        if bad:
            reason = (f"model {model.name!r} has non-finite weights (NaN or inf) in {len(bad)} parameter(s), "
                      f"e.g. {', '.join(bad[:3])}: nothing it measures can be valid; fix or reload the checkpoint")
            store.write_event(step("refused", reason=reason))
            raise NotFinite(reason)
    why = "no stored run with these settings"  # why it is measured, for the protocol log
    if reuse:
        old, doubt = reusable(store, spec, summary)
        if old is not None and not doubt:
            tables = _with_summaries(store, inst, old, summary)
            store.write_event(step("reused", old.id, f"identical stored run of {old.started_at:%Y-%m-%d %H:%M}"))
            return RunResult(old, tables, reused=True, spec=spec, summary=summary)
        stale = _staleness(store.runs(instrument=instrument, model=lm.name, corpus_hash=corpus.hash,
                                      status="complete", provenance="measured"), inst.version, lm.revision)
        why = (f"stored run {old.id} not reused, it does not verify: {doubt}" if doubt else stale or why)

    refusal = split_refusal(inst, lm)
    if refusal:  # before anything is measured: only the log says it was asked for
        store.write_event(step("refused", reason=refusal))
        raise SplitRefused(refusal)
    run = Run(instrument=instrument, instrument_version=inst.version, model=lm.name, model_revision=lm.revision,
              others={m: {"name": name, "revision": revision} for m, name, revision in spec.others},
              corpus=corpus.name, corpus_hash=corpus.hash, settings=spec.measure_settings, settings_hash=spec.key,
              device=lm.where, dtype=lm.dtype, seed=spec.measure_settings["seed"], packages=package_versions(),
              git_commit=git_commit_of_atlas(), started_at=utcnow(), ended_at=utcnow(), status="running")
    arguments = {**{k: v for k, v in spec.settings if k in inst.defaults and k not in inst.models}, **others}
    state = _model_state(lm.model)
    try:
        if lm.checksum and state[0] != lm.checksum:
            raise IsolationBreach(f"model {lm.name!r} was changed after it was loaded (by code outside CISP); "
                                  "reload it before measuring")
        _seed_everything(spec.measure_settings["seed"])
        # an instrument that trains: its trainings stored here, their progress shown as its own
        trains = {"lab": LabRuns(store, log, progress=progress)} if inst.trains else {}
        measured = dict(inst.measure(lm, corpus, progress=progress, **trains, **arguments))
        changed = [what for what, a, b in zip(_STATE_NAMES, state, _model_state(lm.model)) if a != b]
        if changed:
            lm.model.train(state[3])  # leave the process usable; the breach is still reported
            torch.set_grad_enabled(state[4])
            raise IsolationBreach(f"instrument {instrument!r} left model {lm.name!r} changed "
                                  f"({', '.join(changed)} differ from before the run); its results were not stored")
        measured = _checked(measured)
        summaries = _summarise(inst, measured, summary)
    except BadInput as exc:
        if isinstance(exc, SchemaViolation):  # measured, and the result is invalid: a failed run is its record
            _store_failed(store, run, exc, step)
        else:  # refused before a measurement was made: only the log says it was asked for
            store.write_event(step("refused", reason=f"{type(exc).__name__}: {exc}"))
        raise
    except Exception as exc:
        _store_failed(store, run, exc, step)
        raise
    run.status, run.ended_at = "complete", utcnow()
    derivation = None if summary is None else Derivation(key=summary.key(run.id), run_id=run.id,
                                                         settings=summary.settings)
    store.write_run(run, measured, derivation, summaries,
                    events=[step("measured", run.id, why + _against_plan(inst, lm, corpus, run))])
    return RunResult(run, {**measured, **summaries}, reused=False, spec=spec, summary=summary)


def split_refusal(inst: Instrument, lm: LoadedModel) -> str:
    """Why ``inst`` is refused on ``lm`` ("" when it is not): a model ``--device-map auto`` split across devices
    runs only the instruments registered ``runs_split``. ``run_spec`` refuses by it; the plan lists by it."""
    if inst.runs_split or not lm.split:
        return ""
    return (f"{inst.name} is refused on {lm.name}, which is split across devices ({lm.where}): {inst.split_refusal}; "
            "measure it without --device-map auto, on a device the model fits on")


def _against_plan(inst: Instrument, lm: LoadedModel, corpus: Corpus, run: Run) -> str:
    """What the protocol log says of a measurement's time beside the cost model's estimate (``atlas._costs``), so
    that the report's log compares the two for every step; "" for an instrument the model was not calibrated for."""
    expected = estimate(inst.name, lm.model, len(corpus.passages))
    if expected is None:
        return ""
    return (f"; took {duration((run.ended_at - run.started_at).total_seconds())}, "
            f"the plan expected {duration(expected[0])}")


def reusable(store: Store, spec: RunSpec, summary: SummarySpec | None) -> tuple[Run | None, str]:
    """CISP's reuse rule: the newest complete measured run stored under ``spec``'s key (None when there is none)
    and why it may not be reused ("" when it may: ``_doubt``). ``run_spec`` reuses by it; the plan lists by it."""
    stored = store.runs(settings_hash=spec.key, status="complete", provenance="measured")
    return (stored[-1], _doubt(store, stored[-1], summary)) if stored else (None, "")


def _store_failed(store: Store, run: Run, exc: Exception, step: Callable[..., ProtocolEvent]) -> None:
    """A run that measured and failed (an invalid table, a breach, a crash): stored with its error, no rows."""
    run.status, run.error, run.ended_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
    store.write_run(run, {}, events=[step("failed", run.id, run.error)])


def _checked(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Validate each table against its schema, then hold it in the schema's dtypes."""
    for name, table in tables.items():
        validate_table(name, table)
    return {name: coerce(name, table) for name, table in tables.items()}


def _summarise(inst: Instrument, measured: dict[str, pd.DataFrame], summary: SummarySpec | None
               ) -> dict[str, pd.DataFrame]:
    if summary is None:
        return {}
    primary = measured[inst.table]
    return _checked({name: fn(primary, n_resamples=summary.n_resamples, seed=summary.seed)
                     for name, fn in inst.summaries.items()})


def _doubt(store: Store, run: Run, summary: SummarySpec | None) -> str:
    """Why a stored run may not be reused ("" when it may): it, or the derivation of ``summary`` made from it
    before, does not verify against its seal (``Store.check``): rows inserted under it, a forged run."""
    derived = None if summary is None else store.derivation(summary.key(run.id))
    return store.check(run) or (derived is not None and store.check(derived)) or ""


def _with_summaries(store: Store, inst: Instrument, run: Run, summary: SummarySpec | None) -> dict[str, pd.DataFrame]:
    """A stored run's tables with the summaries of ``summary``: read if derived before, else derived now from the
    stored primary table and appended to the run as a new derivation."""
    if summary is None:
        return store.tables(run.id)
    key = summary.key(run.id)
    if store.derivation(key) is not None:
        return store.tables(run.id, derivation=key)
    measured = store.tables(run.id, names=set(inst.measures), derivation=key)
    summaries = _summarise(inst, measured, summary)
    store.write_derivation(Derivation(key=key, run_id=run.id, settings=summary.settings), summaries)
    return {**measured, **summaries}


_STATE_NAMES = ("parameters", "hooks", "attention implementation", "train mode", "grad mode")


def _model_state(model: torch.nn.Module) -> tuple:
    """What a run must leave as it found it, in the order of ``_STATE_NAMES``."""
    return (model_checksum(model), hook_count(model), getattr(model.config, "_attn_implementation", None),
            model.training, torch.is_grad_enabled())


def _staleness(stored: list[Run], version: str, revision: str) -> str:
    """Why stored runs of the same instrument, model and corpus were not reused, if any are stale."""
    older = [r for r in stored if r.instrument_version != version or r.model_revision != revision]
    if not older:
        return ""
    r = older[-1]
    what = (f"instrument v{r.instrument_version}, now v{version}" if r.instrument_version != version
            else f"model revision {r.model_revision[:24]}, now {revision[:24]}")
    return f"stale: {len(older)} stored run(s) not reused (newest {r.id[:8]}: {what})"


public("atlas", RunResult, RunSpec, SummarySpec, run_instrument)
