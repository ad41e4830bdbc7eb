"""A plan before the run: what ``pytest predictions/`` would train, measure and reuse, and what it would cost.

``pytest predictions/ --atlas-plan`` (and ``atlas plan``) collects the selected predictions, lists
their steps and ends without running a test body, training or measuring anything::

    Atlas plan: profile quick, corpus starter-v1 (sha256:ce46e9ac469e…), store sqlite:///atlas.db
    step    instrument model                 passages reused run est. time est. peak for         note
    train   lab        lab:memory-lm@0                                 16.0 s    42 MiB P12-memory…
    measure memory     lab:memory-lm@0                                                  P12-memory… no estimate (…
    measure perplexity smollm2-135m-instruct       96                  29.5 s   703 MiB P0b-domain…
    reuse   coupling   smollm2-135m-instruct       64 70dd0a1f                          P5d-coupling-rises
    not run perplexity gpt2                                                             P0a-seed-… model 'gpt2' …
    total: 1 to train, 2 to measure, 1 to reuse, 1 not run; estimated 45.4 s for 2 step(s), 1 step(s) without an
    estimate; largest peak 703 MiB

Without loading anything, ``slow`` rates each prediction for the ``slow`` marker (``pytest -m "not slow"``): one
that measures a Lab model, or an instrument that trains Lab runs of its own, or whose instrument runs the cost
model expects to take more than ``SLOW_SECONDS`` in all, on the run's models, profile and corpus (each model at the
parameter count its registry entry gives: ``ModelSpec.parameters``), or one of whose runs has no estimate (not
known to be quick).

The steps are the ones a run takes, found the way it finds them: each prediction is built from its
marker (``atlas._predict.Prediction``: its models, ``needs`` and their order, ``Prediction.steps``)
and each input resolved by the session (``AtlasSession.resolve``: the profile's corpus and settings,
the RunSpec and its key); a step is "reuse" when CISP's reuse rule finds a stored run for that key
(``atlas._cisp.reusable``), else "measure". A Lab model (``lab:RECIPE@SEED``) not yet trained in
the Lab cache is a "train" step (one finished there is "trained"), and the inputs on it are measured
after it trains; the runs an instrument trains of its own (``memory``) are inside its step. A model
that cannot be loaded here is "not run" with the reason the run would give. Loading a model to
resolve its steps never trains one. With ``--atlas-device-map auto`` a model is loaded as the run loads it;
when it is split across devices, a step whose instrument runs split says so in its note, and one whose
instrument does not (second-order and gradient instruments: ``atlas._cisp.split_refusal``) is "not run",
refused by CISP with the reason.

Each step to run carries an estimated wall time and peak memory from the cost model
(``atlas._costs``, calibrated by ``benchmarks/costs.py``): a Lab training from its recipe's timed training
scaled by the steps, a step on a Lab model not trained yet at the parameter count of its recipe's shape
(``parameter_count``; a fine-tune's, its initial model's). An instrument or recipe that was not calibrated has
"no estimate". The last line totals the steps, the estimated time of those with an estimate (a sum of
one-process times: a run trains the small Lab runs two at a time, so its Lab share is shorter) and the
largest estimated peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pytest

from ._cisp import reusable, split_refusal
from ._costs import estimate, seconds_for, training_estimate
from ._errors import AtlasError, Unavailable
from ._registry import LAB_PREFIX, MODELS
from ._predict import NO_PAIR, AtlasSession, Prediction, model_names
from ._predict import steps as input_steps
from ._table import aligned, duration
from ._urls import shown_url
from .instruments import INSTRUMENTS
from .lab._recipe import parameter_count
from .lab._runs import parse_lab_name
from .lab._train import finished_run

__all__ = ["SLOW_SECONDS", "Measurement", "Step", "measurements", "plan", "plan_lines", "slow"]

#: the ``slow`` marker's threshold: a prediction whose instrument runs the cost model expects to take longer than
#: this in all (each run counted, as if the prediction ran alone) is slow, as is every one that trains and every one
#: with a run the cost model cannot rate. Five minutes, the goal of a whole warm run (on 2 cores the cost model puts
#: perplexity on smollm2-135m-instruct at about 30 s, ablation at about 2.5 min)
SLOW_SECONDS = 300.0


@dataclass
class Step:
    """One line of the plan."""

    action: str  # train | trained | measure | reuse | not run
    instrument: str  # "lab" for a training
    model: str
    passages: int | None = None
    run: str = ""  # the stored run reused
    seconds: float | None = None
    peak_mb: float | None = None
    note: str = ""  # why it has no estimate, or why it is not run
    predictions: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.action in ("train", "measure")


def plan(session: AtlasSession, items: Iterable[pytest.Item]) -> list[Step]:
    """The steps of the predictions among ``items``, in the order a run takes them, each once (with every
    prediction that needs it). ``session`` is the run's; its Lab resolver is replaced by one that only finds
    trained runs, so planning never trains."""
    session.lab = _trained_checkpoint
    steps: dict[tuple, Step] = {}

    def add(key: tuple, step: Step, prediction: str) -> None:
        steps.setdefault(key, step).predictions.append(prediction)

    for pid, prediction, inputs in _inputs(session, items):
        if isinstance(prediction, AtlasError):
            add(("not run", pid), Step("not run", "", "", note=_line(prediction)), pid)
            continue
        if not prediction.model_names:
            add(("not run", NO_PAIR), Step("not run", "", "", note=NO_PAIR), pid)
        for name, instrument, declared in inputs:
            lab = {m: _trained(m) for m in _models_of(session, name, instrument, declared) if m.startswith(LAB_PREFIX)}
            untrained = [m for m, trained in lab.items() if trained is False]
            for model, trained in lab.items():
                if trained:
                    add((model,), Step("trained", "lab", model), pid)
                elif trained is False:
                    add((model,), _training(model), pid)
            key, step = _input(session, name, instrument, declared, untrained)
            add(key, step, pid)
    return list(steps.values())


@dataclass(frozen=True)
class Measurement:
    """One input a run would measure: on ``model``, ``instrument`` with the prediction's ``declared`` settings,
    for ``prediction`` (the first that needs it), with the cost model's estimated peak (MiB; None: uncalibrated)."""

    model: str
    instrument: str
    declared: dict
    prediction: str
    peak_mb: float | None = None


def measurements(session: AtlasSession, items: Iterable[pytest.Item]) -> list[Measurement]:
    """The plan's "measure" steps among ``items`` as inputs to measure elsewhere (``atlas._cluster``), each once.
    Run after the Lab runs are trained: an input on a Lab run not trained yet is left to the run itself."""
    found: dict[tuple, Measurement] = {}
    for pid, prediction, inputs in _inputs(session, items):
        for name, instrument, declared in inputs:
            models = _models_of(session, name, instrument, declared)
            if any(m.startswith(LAB_PREFIX) and _trained(m) is not True for m in models):
                continue
            key, step = _input(session, name, instrument, declared, [])
            if step.action == "measure" and key not in found:
                found[key] = Measurement(name, instrument, dict(declared), pid, step.peak_mb)
    return list(found.values())


def lab_runs(session: AtlasSession, items: Iterable[pytest.Item]) -> list[tuple]:
    """(recipe, seed) of every Lab model the predictions among ``items`` measure, each once, in the order a run
    needs them (a bad Lab name is left to the run, which refuses it)."""
    names = (m for _, prediction, inputs in _inputs(session, items) for name, instrument, declared in inputs
             for m in _models_of(session, name, instrument, declared) if m.startswith(LAB_PREFIX))
    runs = []
    for name in dict.fromkeys(names):
        try:
            runs.append(parse_lab_name(name))
        except AtlasError:
            continue
    return runs


def slow(session: AtlasSession, items: Iterable[pytest.Item]) -> dict[str, str]:
    """Why each slow prediction among ``items`` is slow, by node id: it measures a Lab model (``lab:...``: trained
    first when it is not on disk) or an instrument that trains Lab runs of its own, or the cost model expects its
    instrument runs (``Prediction.steps``) to take more than ``SLOW_SECONDS`` in all on the session's models, profile
    and corpus, or one of its runs has no estimate (an uncalibrated instrument, a model outside the registry: not
    known to be quick). Nothing is loaded but the corpus, once: a model is rated at its registry parameter count
    (``ModelSpec.parameters``). A prediction the run would refuse (a bad declaration, no model pair) is left to it."""
    passages: dict[str, int | None] = {}

    def seconds(instrument: str, model: str) -> float | None:
        if instrument not in passages:
            passages[instrument] = _passages(session, instrument)
        parameters = _parameters(model)
        if parameters is None or passages[instrument] is None:
            return None
        expected = seconds_for(instrument, parameters, passages[instrument])
        return None if expected is None else expected[0]

    found = {}
    for item in items:
        marker = item.get_closest_marker("prediction")
        if marker is None:
            continue
        kwargs = marker.kwargs  # the declaration alone: a Prediction would hash its analysis (slow)
        try:
            if not all(n in INSTRUMENTS for n in kwargs.get("needs", ())):
                continue  # an unknown instrument: the run refuses it
            inputs = input_steps(kwargs.get("id", item.nodeid),
                                 model_names(session, kwargs.get("model"), kwargs.get("default_pair")),
                                 kwargs.get("needs", ()))
        except AtlasError:  # no second model of a pair: the run refuses it
            continue
        why, total = "", 0.0
        for name, instrument, declared in inputs:
            lab = [m for m in _models_of(session, name, instrument, declared) if m.startswith(LAB_PREFIX)]
            expected = None if lab or INSTRUMENTS[instrument].trains else seconds(instrument, name)
            if expected is None:
                why = (f"measures {lab[0]}" if lab else f"{instrument} trains Lab runs of its own"
                       if INSTRUMENTS[instrument].trains else f"no estimate of {instrument} on {name}")
                break
            total += expected
        if why or total > SLOW_SECONDS:
            found[item.nodeid] = why or f"estimated {duration(total)}"
    return found


def _inputs(session: AtlasSession, items: Iterable[pytest.Item]) -> Iterator[tuple[str, object, list]]:
    """(id, prediction, its inputs) of each prediction among ``items``; the prediction is the AtlasError that
    refused it (no inputs) when it cannot be set up."""
    for item in items:
        marker = item.get_closest_marker("prediction")
        if marker is None:
            continue
        pid = marker.kwargs.get("id", item.nodeid)
        try:
            prediction = Prediction(session, item, **marker.kwargs)
            yield pid, prediction, prediction.steps()
        except AtlasError as exc:
            yield pid, exc, []


def _models_of(session: AtlasSession, name: str, instrument: str, declared: dict) -> list[str]:
    """The model an input is measured on and the other models its settings name (a pairwise instrument's)."""
    settings = session.settings_for(instrument, declared)
    return [name, *(v for m, v in settings.items() if m in INSTRUMENTS[instrument].models and v)]


def _passages(session: AtlasSession, instrument: str) -> int | None:
    """The passages the profile gives ``instrument`` (None when the corpus cannot be read: the run says why)."""
    try:
        return len(session.corpus_for(instrument).passages)
    except AtlasError:
        return None


def _parameters(name: str) -> int | None:
    """A model's parameters without loading it: a registry model's count (``ModelSpec.parameters``); a Lab model's,
    its recipe shape's ``parameter_count`` (an upper estimate) or a fine-tune's initial model's; None when unknown."""
    if not name.startswith(LAB_PREFIX):
        count = getattr(MODELS.get(name), "parameters", None)  # the registry writes 135e6
        return None if count is None else int(count)
    recipe, _ = parse_lab_name(name)
    if recipe.architecture is not None:
        return parameter_count(recipe.architecture)
    return _parameters(recipe.data.init or "")


def _training(name: str) -> Step:
    """The "train" step of a Lab model not trained yet, with the recipe's timed training scaled by its steps."""
    recipe, _ = parse_lab_name(name)
    expected = training_estimate(recipe.name, recipe.steps)
    if expected is None:
        return Step("train", "lab", name, note=f"no estimate (recipe {recipe.name} not timed)")
    return Step("train", "lab", name, seconds=expected[0], peak_mb=expected[1])


def _trained(name: str) -> bool | None:
    """Whether a Lab model's run is finished in the Lab cache (None for a bad Lab name: loading refuses it)."""
    try:
        return finished_run(*parse_lab_name(name)) is not None
    except AtlasError:
        return None


def _trained_checkpoint(name: str) -> str:
    """The Lab resolver of a plan: a trained run's last checkpoint, never a training."""
    return str(finished_run(*parse_lab_name(name)).checkpoints[-1][1])


def _input(session: AtlasSession, name: str, instrument: str, declared: dict, untrained: list[str]
           ) -> tuple[tuple, Step]:
    """One input's key (what the session measures once) and step."""
    plain = (instrument, name, repr(sorted(declared.items())))
    if untrained:
        after = f"after training {', '.join(untrained)}"
        parameters, passages = _parameters(name), _passages(session, instrument)
        expected = None if parameters is None or passages is None else seconds_for(instrument, parameters, passages)
        if expected is None:
            return ("measure", *plain), Step("measure", instrument, name, note=f"no estimate ({after})")
        return ("measure", *plain), Step("measure", instrument, name, passages, seconds=expected[0],
                                         peak_mb=expected[1], note=f"{after}; rated at {parameters:,} parameters")
    try:
        lm = session.model(name)
        spec, summary, corpus, _ = session.resolve(instrument, lm, declared)
        old, doubt = reusable(session.store, spec, summary)
    except Unavailable as exc:
        return ("not run", *plain), Step("not run", instrument, name, note=_line(exc))
    except AtlasError as exc:
        return ("not run", *plain), Step("not run", instrument, name, note=f"refused by CISP: {_line(exc)}")
    key = (spec.key, None if summary is None else summary.key(""))
    passages = len(corpus.passages)
    if old is not None and not doubt:
        return key, Step("reuse", instrument, name, passages, run=old.id[:8])
    if refusal := split_refusal(INSTRUMENTS[instrument], lm):
        return ("not run", *plain), Step("not run", instrument, name, note=f"refused by CISP: {refusal}")
    unverified = f"stored run {old.id[:8]} does not verify" if old is not None else ""
    expected = estimate(instrument, lm.model, passages)
    trains = "trains Lab runs of its own" if INSTRUMENTS[instrument].trains else ""
    split = f"runs split across devices ({lm.where})" if lm.split else ""
    if expected is None:
        return key, Step("measure", instrument, name, passages,
                         note="; ".join(filter(None, ("no estimate (uncalibrated)", trains, unverified, split))))
    return key, Step("measure", instrument, name, passages, seconds=expected[0], peak_mb=expected[1],
                     note="; ".join(filter(None, (trains, unverified, split))))


def _line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def plan_lines(session: AtlasSession, steps: list[Step]) -> list[str]:
    """The plan as text: a header (profile, corpus, store), one line per step, and the total."""
    try:
        corpus = f"{session.corpus.name} ({session.corpus.hash[:19]}…)"
    except AtlasError as exc:
        corpus = f"{session.corpus_path} ({_line(exc)})"
    header = f"Atlas plan: profile {session.profile.name}, corpus {corpus}, store {shown_url(session.db_url)}"
    rows = [(s.action, s.instrument, s.model, "" if s.passages is None else s.passages, s.run,
             "" if s.seconds is None else duration(s.seconds), "" if s.peak_mb is None else f"{s.peak_mb:.0f} MiB",
             ", ".join(sorted(set(s.predictions))), s.note) for s in steps]
    table = aligned(("step", "instrument", "model", "passages", "reused run", "est. time", "est. peak", "for",
                     "note"), rows, right={3, 5, 6})
    return [header, *table, _total(steps)]


def _total(steps: list[Step]) -> str:
    counts = {a: sum(s.action == a for s in steps) for a in ("train", "measure", "reuse", "not run")}
    running = [s for s in steps if s.runs]
    timed = [s for s in running if s.seconds is not None]
    unknown = len(running) - len(timed)
    peak = max((s.peak_mb for s in timed), default=None)
    return (f"total: {counts['train']} to train, {counts['measure']} to measure, {counts['reuse']} to reuse, "
            f"{counts['not run']} not run; estimated {duration(sum(s.seconds for s in timed))}"
            + (f" for {len(timed)} step(s), {unknown} step(s) without an estimate" if unknown else "")
            + ("" if peak is None else f"; largest peak {peak:.0f} MiB"))

