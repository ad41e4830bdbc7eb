"""Atlas: claims about the loss landscape of language models, as executable predictions.

The chain, as the Framework draws it: the vocabulary names the terrain, the
instruments measure it, the schema says how measurements are recorded, CISP
(``run_instrument``) enforces isolation and validation, and the store keeps the
record that verdicts and reports are built from.

    >>> from atlas import load_model, load_corpus, Store, run_instrument
    >>> lm = load_model("tiny-gpt2")
    >>> result = run_instrument(Store("sqlite://"), lm, load_corpus("starter"), "perplexity", progress=False)
    >>> sorted(result.tables)
    ['perplexity', 'perplexity_domains']
"""

from ._cisp import IsolationBreach, RunResult, RunSpec, SummarySpec, run_instrument
from ._corpus import STARTER_CORPUS, Corpus, CorpusError, Passage, load_corpus
from ._errors import (AtlasError, BadInput, HardwareUnavailable, Refused, SequencingRefused, SettingsError,
                      StoreUrlError, Unavailable)
from ._import import SheetError, import_sheet, load_sheet, reference_sheet
from ._judgment import JudgmentError, judge
from ._models import MODELS, LoadedModel, ModelSpec, ModelUnavailable, load_model
from ._predict import Evidence, Prediction
from ._profiles import PROFILES, Profile
from ._report import render_report
from ._schema import SchemaViolation, validate_table
from ._stats import bootstrap_ci, spearman
from ._store import Judgment, Store
from ._verdict import Criterion, Outcome
from ._vocabulary import Term, VocabularyError, vocabulary
from .instruments import INSTRUMENTS, Instrument

__all__ = [
    "INSTRUMENTS", "MODELS", "PROFILES", "STARTER_CORPUS",
    "Corpus", "Criterion", "Evidence", "Instrument", "Judgment", "LoadedModel", "ModelSpec", "Outcome", "Passage",
    "Prediction", "Profile", "RunResult", "RunSpec", "Store", "SummarySpec", "Term",
    "bootstrap_ci", "import_sheet", "judge", "load_corpus", "load_model", "load_sheet", "reference_sheet",
    "render_report", "run_instrument", "spearman", "validate_table", "vocabulary",
    # the error tree (atlas._errors): AtlasError > BadInput | Unavailable | Refused
    "AtlasError", "BadInput", "CorpusError", "HardwareUnavailable", "IsolationBreach", "JudgmentError",
    "ModelUnavailable", "Refused", "SchemaViolation", "SequencingRefused", "SettingsError", "SheetError",
    "StoreUrlError", "Unavailable", "VocabularyError",
]
