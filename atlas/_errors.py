"""One exception tree for everything a user of Atlas can act on.

    AtlasError
    ├── BadInput (ValueError)        the input is wrong; the message names it and the fix (CLI exit 2)
    │   ├── CorpusError              a corpus file
    │   ├── SheetError               an imported sheet
    │   ├── SchemaViolation          a table against schema/<table>.yaml
    │   ├── SettingsError            an instrument setting, a profile, an option
    │   ├── VocabularyError          schema/vocabulary.yaml
    │   ├── JudgmentError            a Technician's call
    │   └── StoreUrlError            a database URL that cannot be used
    ├── Unavailable (RuntimeError)   what is asked for is not on this machine (CLI exit 1)
    │   ├── ModelUnavailable         model weights
    │   └── HardwareUnavailable      a device
    └── Refused (RuntimeError)       CISP refused a run (CLI exit 1)
        ├── IsolationBreach          the model was changed, or a run changed it
        ├── NotFinite                non-finite weights, or numbers beyond float64
        └── SequencingRefused        evidence a prediction did not declare

Everything else that escapes is a bug and keeps its traceback. Each kind keeps the
builtin base a caller would catch without knowing Atlas (``ValueError`` for bad
input, ``RuntimeError`` for the others).
"""

from __future__ import annotations

__all__ = ["AtlasError", "BadInput", "HardwareUnavailable", "NotFinite", "Refused", "SequencingRefused",
           "SettingsError", "StoreUrlError", "Unavailable"]


class AtlasError(Exception):
    """The root of every error Atlas raises on purpose."""


class BadInput(AtlasError, ValueError):
    """Input that cannot be used as it is; the message names the problem and the fix."""


class SettingsError(BadInput):
    """An instrument setting, profile or option out of its range or of the wrong kind."""


class StoreUrlError(BadInput):
    """A database URL that cannot be parsed, reached or written to."""


class Unavailable(AtlasError, RuntimeError):
    """Something the run needs is not on this machine (weights, a device)."""


class HardwareUnavailable(Unavailable):
    """The device asked for is not available (e.g. CUDA without a GPU)."""


class Refused(AtlasError, RuntimeError):
    """CISP refused to measure, or to let a prediction use what it measured."""


class NotFinite(Refused):
    """A model whose weights hold NaN or ±inf, or whose numbers leave float64 (a mean NLL whose exp
    overflows): nothing it measures can be a finite, valid table, so it is refused."""


class SequencingRefused(Refused):
    """A prediction asked for evidence it did not declare in ``needs=``."""
