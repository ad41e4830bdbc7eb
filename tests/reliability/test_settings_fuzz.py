"""Fuzzing every instrument setting through ``atlas measure`` (hypothesis): a bad value is one line, exit 2,
nothing stored, no traceback.

For every registered instrument (``atlas.INSTRUMENTS``) and every setting its entry function declares
(``Instrument.settings``, read from the signature: ``atlas._bounds``), and for the seed every instrument takes,
the values a user could type that the declaration refuses are generated from the declaration itself: NaN and
±inf, empty and non-numeric text, whole numbers too large for 63 bits, numbers just past a bound, text outside
a ``Literal``'s set, and comma lists with an empty, non-numeric, non-finite, out-of-bounds or unknown item.
Each is given on the command line as ``--flag=value``; the command must end with exit status 2 and one line
naming the setting, before the model loads and before the store is created.

``ATLAS_FUZZ_EXAMPLES`` scales the examples per setting (100 → 5 each by default, 1000 → 50 in CI); the
examples are derandomised, so every run tries the same values.
"""

import math
import string
import traceback

import pytest
from _support import FUZZ_EXAMPLES, record
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas import INSTRUMENTS, _models
from atlas._bounds import INT_LIMIT
from atlas._cisp import STATISTICS
from atlas.cli import main

pytestmark = pytest.mark.reliability

PER_SETTING = settings(max_examples=max(5, FUZZ_EXAMPLES // 20), derandomize=True, database=None, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CASES = [(name, s) for name, inst in INSTRUMENTS.items() for s in inst.settings.values()
         if s.kind in (int, float, str) or s.choices is not None] + [("perplexity", STATISTICS["seed"])]

letters = st.text(alphabet=string.ascii_letters + " _-", min_size=1, max_size=12)  # never a number but nan/inf
non_finite = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "-Infinity", "1e999"])
huge = st.integers(INT_LIMIT, 10 ** 40).flatmap(lambda n: st.sampled_from([str(n), str(-n)]))


def _past(kind, bounds):
    """Numbers (as text) just outside ``bounds``: below a lower bound, at or over an upper one."""
    out = []
    for b in bounds:
        if b.op in (">=", ">"):
            top = b.limit - 1 if b.op == ">=" and kind is int else b.limit
            low = (st.integers(-10 ** 6, int(math.floor(top))) if kind is int
                   else st.floats(-1e6, b.limit - (1e-6 if b.op == ">=" else 0)))
            out.append(low.map(str))
        else:
            out.append(st.integers(int(b.limit), int(b.limit) + 10 ** 6).map(str))
    return out


def bad_values(setting) -> st.SearchStrategy[str]:
    """Text a user could type for ``setting`` that its declaration refuses."""
    if setting.choices is not None:
        return letters.filter(lambda v: v not in setting.choices)
    if setting.items is not None:
        items = setting.items
        if items.kind is str:
            bad_item = (st.just("") if not items.choices
                        else letters.filter(lambda v: v.strip() not in items.choices and v not in items.words))
        else:
            bad_item = st.one_of(st.just(""), letters, non_finite, *_past(items.kind, items.bounds))
        good = st.sampled_from(items.choices or ("1",))
        return st.tuples(st.lists(good, max_size=2), bad_item).map(lambda p: ",".join([*p[0], p[1]])).filter(
            lambda v: v not in items.words)
    families = [st.just(""), letters, *_past(setting.kind, setting.bounds)]
    if setting.kind is float:
        families.append(non_finite)
    else:
        families += [huge, non_finite, st.sampled_from(["1.5", "2e3", "0x10"])]
    return st.one_of(*families)


@pytest.fixture(scope="module")
def no_model_load():
    """Fails the test if a model is loaded: the setting must be refused first."""
    real = _models.load_model

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the setting was checked")

    _models.load_model = loaded
    yield
    _models.load_model = real


@pytest.mark.parametrize("instrument, setting", CASES, ids=[f"{n}-{s.name}" for n, s in CASES])
@PER_SETTING
@given(data=st.data())
def test_a_bad_setting_is_one_line_exit_2_and_nothing_stored(instrument, setting, data, tmp_path_factory,
                                                             tiny_corpus, no_model_load):
    value = data.draw(bad_values(setting), label=setting.name)
    db = tmp_path_factory.mktemp("fuzz") / "atlas.db"
    result = CliRunner().invoke(main, ["measure", instrument, "--model", "tiny-gpt2", "--corpus", str(tiny_corpus),
                                       "--db", f"sqlite:///{db}", f"{setting.flag}={value}"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert setting.name in lines[0] or setting.flag in lines[0], lines[0]
    assert "Traceback" not in result.output and not db.exists()  # refused before the store was opened
    record("bad settings tried (one line, exit 2, nothing stored)", 1)
