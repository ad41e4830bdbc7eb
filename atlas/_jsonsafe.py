"""JSON-safe values: what numpy, pandas and Python hand over, as data ``json.dumps`` writes as strict JSON.

One rule, for the store, the exports, the verdicts file, ``--json`` output and the report's figures:

* mappings and lists (tuples too) are converted item by item; keys become text;
* ``None``, text, booleans and integers stay as they are; a finite float stays a float;
* a missing value -- NaN, pandas' ``NA`` and ``NaT`` -- is ``None`` (JSON's null);
* dates and times are ISO 8601 text; numpy scalars and arrays their Python values (``tolist()``);
* ±inf (a number JSON cannot hold, not a missing one) and any other object are refused (``ValueError``,
  ``TypeError``) -- unless the value is a record of what was seen (a verdict's evidence, a sheet's
  record): with ``lenient=True`` ±inf is ``None`` ("no number") and any other object its ``str()``.

    >>> import numpy as np
    >>> from datetime import date
    >>> json_safe({"ppl": np.float64("nan"), "n": np.int64(3), "at": (1.5, date(2026, 4, 1))})
    {'ppl': None, 'n': 3, 'at': [1.5, '2026-04-01']}

Hashing refuses NaN instead (``atlas._provenance.canonical_json``): a record may be missing a number, a
content hash must not depend on one. This module imports nothing from Atlas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["json_safe"]


def json_safe(value, *, lenient: bool = False):
    """``value`` as plain JSON data (see the module doc): NaN and pandas' missing values as ``None``; ±inf
    and objects with no JSON form refused, or (``lenient``) ±inf as ``None`` and the objects as text."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, lenient=lenient) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, lenient=lenient) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        if math.isnan(value) or lenient:
            return None
        raise ValueError(f"{value} has no JSON form: JSON holds finite numbers, and null for a missing one")
    import pandas as pd  # here: the `atlas` command starts without pandas

    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist(), lenient=lenient)
    if lenient:
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form: give its number or its text")
