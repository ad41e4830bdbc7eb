"""What a prediction module talks to: the ``prediction`` fixture.

A prediction is a test function marked with ``@pytest.mark.prediction(...)``
(id, claim, source, form, model, criterion, needs). Before its body runs, CISP
gathers the declared inputs (``needs``, in order) on its model(s) and corpus;
the body reads them and ends with ``prediction.conclude(...)``::

    @pytest.mark.prediction(id="...", claim="...", source="...", form="general",
                            criterion=Criterion("ratio", ">", 2.0), needs=("perplexity",))
    def test_claim(prediction):
        tables = prediction.measure("perplexity")       # gathered already: reused
        ...
        prediction.conclude(effect=r, ci=(lo, hi), n=n, evidence={...})

``conclude`` judges the evidence by the criterion and stores the verdict:
supported passes, refuted fails with the evidence in the message, inconclusive
gets its own test status; a model that cannot be loaded makes the prediction
"not run" (a skip), never a pass, and so does an input that failed (refused).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._cisp import IsolationBreach, RunResult, run_instrument
from ._corpus import Corpus, load_corpus
from ._models import LoadedModel, ModelUnavailable, load_model
from ._profiles import PROFILES, Profile
from ._schema import SchemaViolation
from ._store import ProtocolEvent, Run, Store, VerdictRecord
from ._verdict import Criterion, Outcome
from .instruments import INSTRUMENTS

__all__ = ["AtlasSession", "Inconclusive", "Prediction"]


class Inconclusive(Exception):
    """Raised by ``conclude`` when the CI straddles the threshold; reported as INCONCLUSIVE."""


@dataclass
class AtlasSession:
    """State shared by every prediction of one pytest run: options, store, loaded models, measurements."""

    model_name: str
    corpus_path: str
    db_url: str
    reports_dir: Path
    device: str = "auto"
    dtype: str = "auto"
    profile: Profile = PROFILES["quick"]
    pair: tuple[str, str] | None = None  # (base, other) for pairwise general forms
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
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
    def corpus(self) -> Corpus:
        """The selected corpus, sampled to the profile's passages per domain."""
        if self._corpus is None:
            self._corpus = load_corpus(self.corpus_path).sample(self.profile.passages_per_domain)
        return self._corpus

    def model(self, name: str) -> LoadedModel:
        """Load once per session; an unavailable model raises ``ModelUnavailable`` every time it is asked for."""
        if name not in self._models:
            try:
                self._models[name] = load_model(name, device=self.device, dtype=self.dtype)
            except ModelUnavailable as exc:
                self._models[name] = exc
        found = self._models[name]
        if isinstance(found, ModelUnavailable):
            raise found
        return found

    def corpus_for(self, instrument: str) -> Corpus:
        """The selected corpus as the profile samples it for ``instrument``."""
        per_domain = self.profile.per_domain.get(instrument)
        return self.corpus if per_domain is None else self.corpus.sample(per_domain)

    def measure(self, instrument: str, lm: LoadedModel, corpus: Corpus, prediction: str | None = None,
                **settings) -> RunResult:
        """Run (or reuse) an instrument with the profile's settings for it, overridden by ``settings``."""
        settings = {"bootstrap_resamples": self.profile.bootstrap_resamples,
                    **self.profile.settings.get(instrument, {}), **settings}
        key = (instrument, lm.name, corpus.hash, tuple(sorted(settings.items())))
        if key not in self._runs:
            self._runs[key] = run_instrument(self.store, lm, corpus, instrument, session=self.session_id,
                                             prediction=prediction, **settings)
        else:
            self.log(prediction, instrument, lm.name, corpus.hash, "reused", run_id=self._runs[key].run.id,
                     reason="measured earlier in this session")
        return self._runs[key]

    def log(self, prediction: str | None, instrument: str, model: str, corpus_hash: str, action: str, *,
            run_id: str | None = None, reason: str = "") -> None:
        """One entry of this session's protocol log (CISP writes its own for what it measures)."""
        self.store.write_event(ProtocolEvent(session=self.session_id, prediction=prediction, instrument=instrument,
                                             model=model, corpus_hash=corpus_hash, action=action, run_id=run_id,
                                             reason=reason))


class Prediction:
    """One marked prediction test: its declaration, and the evidence it gathers."""

    def __init__(self, session: AtlasSession, node: pytest.Item, *, id: str, claim: str, criterion: Criterion,
                 needs: tuple[str, ...] | dict[str, dict], source: str = "", form: str = "general",
                 model: str | tuple[str, ...] | None = None):
        """``needs``: the instruments whose tables are the evidence, in the order CISP gathers them, as
        names or as ``{name: settings}`` when the evidence needs settings other than the profile's;
        ``model``: a name (default: the session's selected model), a tuple of names for a named
        comparison, or ``"pair"`` for the session's ``--atlas-pair``."""
        if form not in ("named", "general"):
            raise ValueError(f"prediction {id!r}: form must be 'named' or 'general', not {form!r}")
        unknown = [n for n in needs if n not in INSTRUMENTS]
        if unknown or not needs:
            raise ValueError(f"prediction {id!r}: needs= must name instruments of the registry "
                             f"({', '.join(INSTRUMENTS)}); unknown: {unknown or 'none given'}")
        self.session, self.node = session, node
        self.id, self.claim, self.criterion, self.source, self.form = id, claim, criterion, source, form
        self.needs: dict[str, dict] = dict(needs) if isinstance(needs, dict) else {n: {} for n in needs}
        if model == "pair":
            self.model_names = session.pair or ()
        elif isinstance(model, (tuple, list)):
            self.model_names = tuple(model)
        else:
            self.model_names = (model or session.model_name,)
        self.model_name = " vs ".join(self.model_names) or "(no model pair given)"
        self.runs: dict[str, Run] = {}  # the runs whose tables are the evidence

    @property
    def corpus(self) -> Corpus:
        return self.session.corpus

    @property
    def profile(self) -> Profile:
        return self.session.profile

    def model(self, name: str | None = None) -> LoadedModel:
        """The named model (default: the prediction's first); if it cannot be loaded the prediction is not run."""
        try:
            return self.session.model(name or self.models_named()[0])
        except ModelUnavailable as exc:
            self.not_run(str(exc))

    def models_named(self) -> tuple[str, ...]:
        if not self.model_names:
            self.not_run("no model pair given: pass --atlas-pair BASE,OTHER (e.g. mistral-7b,mistral-7b-instruct)")
        return self.model_names

    def models(self) -> list[LoadedModel]:
        """Every model the prediction compares, loaded; not run if any is unavailable."""
        return [self.model(name) for name in self.models_named()]

    def gather(self) -> None:
        """CISP sequencing: measure (or reuse) every needed instrument on every model of the prediction,
        in the declared order, before any evidence is judged. A failed input refuses the prediction."""
        for name in self.models_named():
            for instrument in self.needs:
                self.measure(instrument, model=name)

    def measure(self, instrument: str, model: str | None = None, corpus: Corpus | None = None,
                **settings) -> dict:
        """Tables of ``instrument`` on a model (default: the prediction's) and corpus (default: the session's).

        Only declared inputs (``needs=``) may be measured: evidence a pre-registration did not name is refused.
        """
        if instrument not in self.needs:
            self._refuse(instrument, model, f"it is not among the declared inputs {list(self.needs)}; "
                                            "declare it in the prediction's marker")
            pytest.fail(f"CISP refuses {self.id}: it measured {instrument!r}, which is not among its declared "
                        f"inputs needs={list(self.needs)}", pytrace=False)
        lm = self.model(model)
        try:
            result = self.session.measure(instrument, lm, corpus or self.session.corpus_for(instrument),
                                          prediction=self.id, **{**self.needs[instrument], **settings})
        except (SchemaViolation, IsolationBreach) as exc:
            self._refuse(instrument, lm.name, f"its input failed: {type(exc).__name__}")
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            self.not_run(f"refused by CISP: the input {instrument!r} on {lm.name} failed "
                         f"({type(exc).__name__}: {first_line}); its run is stored as failed")
        self.runs[result.run.id] = result.run
        return result.tables

    def _refuse(self, instrument: str, model: str | None, reason: str) -> None:
        self.session.log(self.id, instrument, model or self.model_name, self.corpus.hash, "refused", reason=reason)

    def not_run(self, reason: str):
        self._store(Outcome.NOT_RUN, reason=reason)
        pytest.skip(f"not run: {reason}")

    def conclude(self, *, effect: float, ci: tuple[float, float], n: int, evidence: dict | None = None,
                 reason: str = "") -> Outcome:
        """Judge ``effect`` and its CI by the criterion, store the verdict, and report it to pytest."""
        outcome = self.criterion.judge(effect, *ci)
        summary = f"{self.criterion.statistic} = {effect:.4g}, 95% CI [{ci[0]:.4g}, {ci[1]:.4g}], n = {n}"
        reason = reason or {
            Outcome.SUPPORTED: f"{summary}: the CI lies on the claimed side of {self.criterion.threshold:g}",
            Outcome.REFUTED: f"{summary}: the CI lies on the wrong side of {self.criterion.threshold:g}",
            Outcome.INCONCLUSIVE: f"{summary}: the CI straddles {self.criterion.threshold:g} or is missing",
        }[outcome]
        self._store(outcome, effect=effect, ci=ci, n=n, evidence=evidence or {}, reason=reason)
        if outcome is Outcome.REFUTED:
            pytest.fail(f"REFUTED {self.id} on {self.model_name}: {reason}\ncriterion: {self.criterion}\n"
                        f"evidence: {evidence}", pytrace=False)
        if outcome is Outcome.INCONCLUSIVE:
            self.node.user_properties.append(("atlas_outcome", "inconclusive"))
            raise Inconclusive(f"INCONCLUSIVE {self.id} on {self.model_name}: {reason}")
        return outcome

    def _store(self, outcome: Outcome, *, effect=None, ci=(None, None), n=None, evidence=None, reason=""):
        self.session.store.write_verdict(VerdictRecord(
            prediction=self.id, version=self.criterion.version, form=self.form, claim=self.claim,
            source=self.source, model=self.model_name, corpus=self.corpus_description().get("name", ""),
            corpus_hash=self.corpus_description().get("hash", ""), profile=self.profile.name,
            outcome=outcome.value, effect=effect, ci_low=ci[0],
            ci_high=ci[1], n=n, criterion=self.criterion.as_dict(), criterion_hash=self.criterion.hash,
            reason=reason, evidence={**(evidence or {}), "corpus": self.corpus_description(),
                                     "profile": self.profile.name, "inputs": self.inputs()},
            run_ids=list(self.runs), session=self.session.session_id))

    def inputs(self) -> list[dict]:
        """Every sample size the evidence used: per input run, its instrument, model, corpus and settings."""
        return [{"run": r.id, "instrument": r.instrument, "model": r.model, "corpus": r.corpus,
                 "settings": {k: v for k, v in r.settings.items() if k != "seed"}} for r in self.runs.values()]

    def corpus_description(self) -> dict:
        try:
            corpus = self.corpus
        except Exception:  # noqa: BLE001 - a broken corpus must not hide the verdict being stored
            return {"path": self.session.corpus_path}
        return {"name": corpus.name, "hash": corpus.hash, "passages": len(corpus.passages)}
