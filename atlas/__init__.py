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

The public API is this package and its public modules; a name that starts with an underscore
(``atlas._stats``) is not part of it:

* ``atlas``: what a prediction module declares and concludes with (``Criterion``, ``Prediction``, ``Evidence``,
  ``SECOND_OF_PAIR``, ``Outcome``), models and corpora (``load_model``, ``load_corpus``), running and storing
  (``run_instrument``, ``Store``), a prediction session (``AtlasSession``), profiles, the plan's cost model
  (``Cost``, ``fit_cost``), and the error tree
* ``atlas.stats``: confidence intervals, ``bootstrap_ci``, ``hierarchical_ci``, ``t_interval`` ...
* ``atlas.evidence``: the common steps of a prediction body, layer profiles, domain perplexities
* ``atlas.models``: the model registry, ``tiny_model``, decoder anatomy, ``hooks``, token scoring
* ``atlas.instruments``: the instrument registry, ``instrument`` to declare one, each instrument's module
* ``atlas.lab``: small models Atlas trains itself, deterministically
* ``atlas.simulate``: evidence simulated from declared models, for ``atlas calibrate``

A prediction module needs ``atlas`` for its declaration and, in its body, ``atlas.evidence`` or
``atlas.stats`` for the interval it concludes with (``tests/test_public_api.py`` checks that
``predictions/`` and ``benchmarks/`` import nothing private)::

    import pytest
    from atlas import Criterion
    from atlas.evidence import fixed_profile, layer_correlation, mean_profile

    @pytest.mark.prediction(id="P99-coupling-rises", claim="Attention coupling rises with depth.",
                            criterion=Criterion("Spearman rho(layer, coupling)", ">", 0.0, unit="layers",
                                                scale="correlation"),
                            needs=("coupling",))
    def test_coupling_rises_with_depth(prediction):
        passages = prediction.evidence["coupling"]["coupling_passages"]
        profile = mean_profile(passages[passages["variant"] == "row_centred"], "coupling")
        result = layer_correlation(fixed_profile(profile.layers), profile)
        prediction.conclude(effect=result.rho, ci=result.ci, n=result.n_layers, evidence=result.evidence())
"""

import importlib

#: where each public name lives; imported on first use (PEP 562), so that ``import atlas`` -- and the
#: ``atlas`` command's help -- does not pay for torch, transformers and great-expectations up front
_EXPORTS = {
    "._cisp": ("RunResult", "RunSpec", "SummarySpec", "run_instrument"),
    "._costs": ("COST_MODEL_FILE", "Cost", "fit_cost"),
    "._corpus": ("STARTER_CORPUS", "Corpus", "Passage", "load_corpus"),
    "._errors": ("AtlasError", "BadInput", "ClusterUnavailable", "CorpusError", "DoesNotFit", "ExportError",
                 "FlipsError", "HardwareUnavailable", "Inconclusive", "IsolationBreach", "JudgmentError", "LabError",
                 "ModelUnavailable", "NotFinite", "NotSupported", "ReadOnlyStore", "Refused", "RefutedVerdict",
                 "SchemaViolation", "SequencingRefused", "SettingsError", "SheetError", "SplitRefused", "StoreFull",
                 "StoreTampered", "StoreUrlError", "Unavailable", "VocabularyError"),
    "._import": ("import_sheet", "load_sheet", "reference_sheet"),
    "._judgment": ("judge",),
    "._predict": ("SECOND_OF_PAIR", "AtlasSession", "Evidence", "Prediction"),
    "._provenance": ("package_versions",),
    "._profiles": ("PROFILES", "Profile", "active_profile", "using_profile"),
    "._report": ("render_report",),
    "._catalog": ("instrument_table", "settings_table"),
    "._options": ("SETTINGS",),
    "._schema": ("schema_for", "validate_table"),
    "._store": ("Judgment", "Store"),
    "._verdict": ("Criterion", "Outcome"),
    "._vocabulary": ("Term", "vocabulary"),
    ".instruments": ("INSTRUMENTS", "Instrument"),
    ".models": ("MODELS", "LoadedModel", "ModelSpec", "load_model"),
    ".stats": ("bootstrap_ci", "spearman"),
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
    "COST_MODEL_FILE", "INSTRUMENTS", "MODELS", "PROFILES", "SECOND_OF_PAIR", "SETTINGS", "STARTER_CORPUS",
    "AtlasSession", "Corpus", "Cost", "Criterion", "Evidence", "Instrument", "Judgment", "LoadedModel", "ModelSpec", "Outcome", "Passage",
    "Prediction", "Profile", "RunResult", "RunSpec", "Store", "SummarySpec", "Term",
    "active_profile", "bootstrap_ci", "fit_cost", "import_sheet", "instrument_table", "judge", "load_corpus", "load_model",
    "load_sheet", "package_versions", "reference_sheet", "render_report", "run_instrument", "schema_for",
    "settings_table", "spearman", "using_profile", "validate_table", "vocabulary",
    # the error tree (atlas._errors): AtlasError > BadInput | Unavailable | Refused | NotSupported
    "AtlasError", "BadInput", "ClusterUnavailable", "CorpusError", "DoesNotFit", "ExportError", "FlipsError",
    "HardwareUnavailable", "Inconclusive", "IsolationBreach", "JudgmentError", "LabError", "ModelUnavailable",
    "NotFinite", "NotSupported", "ReadOnlyStore", "Refused", "RefutedVerdict", "SchemaViolation", "SequencingRefused",
    "SettingsError", "SheetError", "SplitRefused", "StoreFull", "StoreTampered", "StoreUrlError", "Unavailable",
    "VocabularyError",
]
