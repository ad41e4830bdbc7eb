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

import importlib

#: where each public name lives; imported on first use (PEP 562), so that ``import atlas`` -- and the
#: ``atlas`` command's help -- does not pay for torch, transformers and great-expectations up front
_EXPORTS = {
    "._cisp": ("IsolationBreach", "RunResult", "RunSpec", "SummarySpec", "run_instrument"),
    "._corpus": ("STARTER_CORPUS", "Corpus", "CorpusError", "Passage", "load_corpus"),
    "._errors": ("AtlasError", "BadInput", "HardwareUnavailable", "Refused", "SequencingRefused", "SettingsError",
                 "StoreUrlError", "Unavailable"),
    "._import": ("SheetError", "import_sheet", "load_sheet", "reference_sheet"),
    "._judgment": ("JudgmentError", "judge"),
    "._models": ("MODELS", "LoadedModel", "ModelSpec", "ModelUnavailable", "load_model"),
    "._predict": ("SECOND_OF_PAIR", "Evidence", "Prediction"),
    "._profiles": ("PROFILES", "Profile"),
    "._report": ("render_report",),
    "._schema": ("SchemaViolation", "validate_table"),
    "._stats": ("bootstrap_ci", "spearman"),
    "._store": ("Judgment", "Store"),
    "._verdict": ("Criterion", "Outcome"),
    "._vocabulary": ("Term", "VocabularyError", "vocabulary"),
    ".instruments": ("INSTRUMENTS", "Instrument"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'atlas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "INSTRUMENTS", "MODELS", "PROFILES", "SECOND_OF_PAIR", "STARTER_CORPUS",
    "Corpus", "Criterion", "Evidence", "Instrument", "Judgment", "LoadedModel", "ModelSpec", "Outcome", "Passage",
    "Prediction", "Profile", "RunResult", "RunSpec", "Store", "SummarySpec", "Term",
    "bootstrap_ci", "import_sheet", "judge", "load_corpus", "load_model", "load_sheet", "reference_sheet",
    "render_report", "run_instrument", "spearman", "validate_table", "vocabulary",
    # the error tree (atlas._errors): AtlasError > BadInput | Unavailable | Refused
    "AtlasError", "BadInput", "CorpusError", "HardwareUnavailable", "IsolationBreach", "JudgmentError",
    "ModelUnavailable", "Refused", "SchemaViolation", "SequencingRefused", "SettingsError", "SheetError",
    "StoreUrlError", "Unavailable", "VocabularyError",
]
