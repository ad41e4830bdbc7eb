"""One exception tree for everything a user of Atlas can act on: every exception class of the
package is defined here, and nowhere else.

    AtlasError
    ├── BadInput (ValueError)        the input is wrong; the message names it and the fix (CLI exit 2)
    │   ├── CorpusError              a corpus file
    │   ├── SheetError               an imported sheet (``errors``: every problem found)
    │   ├── SchemaViolation          a table against schema/<table>.yaml (``failures``)
    │   ├── SettingsError            an instrument setting, a profile, an option
    │   ├── VocabularyError          schema/vocabulary.yaml
    │   ├── JudgmentError            a Technician's call
    │   ├── StoreUrlError            a database URL that cannot be used
    │   ├── LabError                 a Lab recipe or training request
    │   ├── FlipsError               a verdicts file ``atlas diff`` cannot compare (CLI exit 1)
    │   └── ExportError              nothing to export, or a format not installed (CLI exit 1)
    ├── Unavailable (RuntimeError)   what is asked for is not on this machine (CLI exit 1)
    │   ├── ModelUnavailable         model weights
    │   ├── HardwareUnavailable      a device
    │   └── ClusterUnavailable       a Ray cluster that cannot be reached, or Ray not installed
    ├── Refused (RuntimeError)       CISP refused a run, or the store a write (CLI exit 1)
    │   ├── IsolationBreach          the model was changed, or a run changed it
    │   ├── DoesNotFit               a measurement larger than every node of the cluster
    │   ├── SplitRefused             an instrument that cannot run on a model split across devices
    │   ├── NotFinite                non-finite weights, or numbers beyond float64
    │   ├── SequencingRefused        evidence a prediction did not declare
    │   ├── StoreTampered            a store whose guard (a table, a trigger) is missing
    │   ├── ReadOnlyStore            a write to a store opened read-only
    │   └── StoreFull                a write the store had no room for (a full disk)
    └── NotSupported                 ``conclude`` judged a claim other than supported: it ends the
        │                            prediction's body and is reported as that outcome, not as an error
        ├── Inconclusive             inconclusive or no effect
        └── RefutedVerdict (AssertionError)   refuted: pytest reports it as a failed assertion

Everything else that escapes is a bug and keeps its traceback. Each kind keeps the
builtin base a caller would catch without knowing Atlas (``ValueError`` for bad
input, ``RuntimeError`` for what is unavailable or refused, ``AssertionError`` for a
refutation). The ``atlas`` command ends with exit status 2 on bad input and 1 on the rest;
``atlas diff`` and ``atlas export`` end with 1 on their own errors (``FlipsError``, ``ExportError``)
as they always have.

This module sits at the bottom of the package: it imports nothing from Atlas but ``atlas._public``
(which imports nothing), to name ``atlas`` as the public home of every class here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._public import public

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AtlasError", "BadInput", "ClusterUnavailable", "CorpusError", "DoesNotFit", "ExportError", "FlipsError",
           "HardwareUnavailable", "Inconclusive", "IsolationBreach", "JudgmentError", "LabError", "ModelUnavailable",
           "NotFinite", "NotSupported", "ReadOnlyStore", "Refused", "RefutedVerdict", "SchemaViolation",
           "SequencingRefused", "SettingsError", "SheetError", "SplitRefused", "StoreFull", "StoreTampered",
           "StoreUrlError", "Unavailable", "VocabularyError"]


class AtlasError(Exception):
    """The root of every error Atlas raises on purpose."""


# --- bad input: the message names the problem and the fix ---------------------------------------------

class BadInput(AtlasError, ValueError):
    """Input that cannot be used as it is; the message names the problem and the fix."""


class CorpusError(BadInput):
    """A corpus file that cannot be used; the message names the file and line."""


class SheetError(BadInput):
    """A sheet that cannot be imported; ``errors`` lists every problem (row, column, what was wrong)."""

    def __init__(self, sheet: str, errors: list[str]):
        self.sheet, self.errors = sheet, errors
        super().__init__(f"sheet {sheet!r} was not imported; nothing was stored:\n"
                         + "\n".join(f"  - {e}" for e in errors[:50])
                         + (f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""))


class SchemaViolation(BadInput):
    """A table does not match its schema. ``failures`` holds (expectation, column, rows)."""

    def __init__(self, table: str, failures: list[tuple[str, str, pd.DataFrame | None]]):
        self.table, self.failures = table, failures
        lines = [f"table {table!r} does not match schema/{table}.yaml; it was not stored:"]
        for expectation, column, rows in failures:
            lines.append(f"  - {expectation} on {column}")
            if rows is not None and len(rows):
                lines.extend("      " + line for line in rows.head(10).to_string().splitlines())
        super().__init__("\n".join(lines))


class SettingsError(BadInput):
    """An instrument setting, profile or option out of its range or of the wrong kind."""


class VocabularyError(BadInput):
    """``schema/vocabulary.yaml`` is malformed."""


class JudgmentError(BadInput):
    """A judgment that cannot be recorded (unknown target, undeclared field, disallowed value); nothing was written."""


class StoreUrlError(BadInput):
    """A database URL that cannot be parsed, reached or written to."""


class LabError(BadInput):
    """A recipe or a training request that cannot be used; the message names the field and the fix."""


class FlipsError(BadInput):
    """A verdicts file that cannot be compared; the message names the file and the problem."""


class ExportError(BadInput):
    """Nothing to export, or a format that cannot be written here; nothing was written."""


# --- unavailable: not on this machine ------------------------------------------------------------------

class Unavailable(AtlasError, RuntimeError):
    """Something the run needs is not on this machine (weights, a device)."""


class ModelUnavailable(Unavailable):
    """The weights of a model cannot be found here; the message says where Atlas looked."""


class HardwareUnavailable(Unavailable):
    """The device asked for is not available (e.g. CUDA without a GPU)."""


class ClusterUnavailable(Unavailable):
    """The Ray cluster asked for cannot be reached (the message names its address), or Ray is not installed."""


# --- refused by CISP -----------------------------------------------------------------------------------

class Refused(AtlasError, RuntimeError):
    """CISP refused to measure, or to let a prediction use what it measured."""


class IsolationBreach(Refused):
    """An instrument left the model different from how it found it, or was given a model changed since loading."""


class NotFinite(Refused):
    """A model whose weights hold NaN or ±inf, or whose numbers leave float64 (a mean NLL whose exp
    overflows): nothing it measures can be a finite, valid table, so it is refused."""


class SequencingRefused(Refused):
    """A prediction asked for evidence it did not declare in ``needs=``."""


class StoreTampered(Refused):
    """A store whose guard has gaps (a dropped table, a missing, altered or disabled trigger): it is not
    trusted, so nothing is written to it, and a missing table refuses it whole; ``atlas verify`` names what
    is broken and ``atlas verify --repair`` re-creates the guard."""


class DoesNotFit(Refused):
    """A measurement whose estimated peak memory exceeds every node of the cluster: refused before it starts."""


class SplitRefused(Refused):
    """An instrument that differentiates with respect to the parameters (or evaluates the model at other ones),
    asked of a model ``--device-map auto`` split across devices: refused before it measures, nothing stored."""


class ReadOnlyStore(Refused):
    """A write to a store opened read-only (``?mode=ro``, or a file this user may not write)."""


class StoreFull(Refused):
    """A write the store had no room for: its disk is full (SQLite's ``SQLITE_FULL``, PostgreSQL's
    ``disk_full``) or its size limit reached. The transaction is rolled back whole: nothing was written."""


# --- a verdict other than supported --------------------------------------------------------------------

class NotSupported(AtlasError):
    """Raised by ``Prediction.conclude`` when the criterion does not support the claim: it ends the body, and
    the plugin reports the outcome it carries (the verdict is stored either way)."""


class Inconclusive(NotSupported):
    """Raised by ``conclude`` when the CI straddles the threshold, or shows no effect; reported as
    INCONCLUSIVE (or NO EFFECT)."""


class RefutedVerdict(NotSupported, AssertionError):
    """Raised by ``conclude`` when the CI lies on the wrong side; reported as REFUTED (a failure, not a crash)."""


public("atlas", *(globals()[name] for name in __all__))
