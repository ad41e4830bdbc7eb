"""The settings the pytest plugin and the ``atlas`` command share are declared once (``atlas._options``).

Both offer each setting with the same default, values, help and environment variable, refuse
a bad value with the same one-line usage error, and no other module restates a default.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

import atlas
from atlas import SettingsError
from atlas import plugin
from atlas._options import SETTINGS
from atlas._profiles import DEFAULT_PROFILE, PROFILES
from atlas.cli import main, measurement_options

#: options of the command that share a setting's flag but not its meaning: filters of stored verdicts and runs
#: (any corpus, profile or model they were judged or measured on, none by default) and the model named in an
#: imported CSV
NOT_THE_SETTING = {("verdicts", "--corpus"), ("verdicts", "--profile"), ("runs", "--model"), ("import", "--model")}
#: the command's options of a setting whose flag is not --NAME
OTHER_FLAGS = {("report", "--out"): "reports"}


def _commands() -> dict[str, click.Command]:
    """Every command of ``atlas`` with options, ``measure`` standing for each of its instruments."""
    commands = {name: c for name, c in main.commands.items() if not isinstance(c, click.Group)}
    return {**commands, "measure": click.command("measure")(measurement_options(lambda **_: None))}


def _shared_options() -> dict[str, list[tuple[str, click.Option]]]:
    """For each setting, the (command, option) pairs of the command that offer it."""
    found = {name: [] for name in SETTINGS}
    for command, cmd in _commands().items():
        for param in cmd.params:
            flag = param.opts[0]
            name = OTHER_FLAGS.get((command, flag), flag[2:])
            if name in SETTINGS and (command, flag) not in NOT_THE_SETTING:
                found[name].append((command, param))
    return found


def _plugin_options(pytestconfig) -> dict[str, dict]:
    group = pytestconfig._parser.getgroup("atlas")
    return {arg.names()[0]: arg.attrs() for arg in group.options}


def test_the_plugin_and_the_command_offer_each_setting_alike(pytestconfig, monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(SETTINGS[name].env, raising=False)
    plugin_options = _plugin_options(pytestconfig)
    assert sorted(plugin_options) == sorted(f"--atlas-{name}" for name in SETTINGS)
    shared = _shared_options()
    # the plugin's alone: the pair, and the plan (a flag; the command's `atlas plan` runs the plugin with it)
    assert {name for name, options in shared.items() if not options} == {"pair", "plan"}
    unset = SimpleNamespace(getoption=lambda dest: None)
    for name, options in shared.items():
        ours = plugin_options[f"--atlas-{name}"]
        default = plugin._option(unset, name)  # no option given, no environment variable
        assert ours["help"].startswith(SETTINGS[name].help) and SETTINGS[name].env in ours["help"]
        for command, option in options:
            where = f"atlas {command} {option.opts[0]}"
            assert option.default == default, where
            assert option.envvar == SETTINGS[name].env, where
            assert ours["help"].startswith(option.help), where
            assert option.metavar == ours["metavar"], where  # the values it takes, e.g. auto|cpu|cuda|cuda:N


def test_the_values_shown_are_the_values_taken():
    assert SETTINGS["profile"].choices == tuple(PROFILES) and SETTINGS["profile"].default == DEFAULT_PROFILE
    assert SETTINGS["device"].choices == ("auto", "cpu", "cuda", "cuda:N")
    for value in ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"):
        assert SETTINGS["device"].check(value) == value
    for value in ("tpu", "cuda:", "cuda:x", "cuda:1:2", "CPU", " cpu"):
        with pytest.raises(atlas.SettingsError, match="unknown device .*: use auto, cpu, cuda or cuda:N"):
            SETTINGS["device"].check(value)
    for setting in SETTINGS.values():
        assert setting.check(setting.default) == setting.default


@pytest.fixture
def plain_project(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    return pytester


def _measure(*args: str):
    return CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--db", "sqlite://", *args])


@pytest.mark.parametrize("device", ["cuda:1", "cpu"])
def test_a_gpu_index_is_a_device_in_both(device, plain_project):
    assert plain_project.runpytest(f"--atlas-device={device}", "-p", "no:cacheprovider").ret == pytest.ExitCode.OK
    measure = main.commands["measure"].get_command(None, "perplexity")
    assert measure.make_context("perplexity", ["--device", device]).params["device"] == device


@pytest.mark.parametrize("name, value, reason", [
    ("device", "tpu", "unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
    ("device", "cuda:x", "unknown device 'cuda:x': use auto, cpu, cuda or cuda:N"),
    ("dtype", "float64", "unknown dtype 'float64': use auto, float32, bfloat16 or float16"),
    ("model", "tiny-gtp2", "unknown model 'tiny-gtp2': did you mean tiny-gpt2? give a registry name (atlas models), "
                           "a Hugging Face id ORG/NAME, a Lab run lab:RECIPE[@SEED] or a checkpoint folder"),
    ("model", "./no-such-folder", "no checkpoint folder './no-such-folder' on this machine: give the folder of a "
                                  "saved model (config.json and weights), or a registry name (atlas models)"),
])
def test_a_bad_value_is_the_same_usage_error_in_both(name, value, reason, plain_project):
    run = plain_project.runpytest(f"--atlas-{name}={value}", "-p", "no:cacheprovider")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--atlas-{name}: {reason}" in run.stderr.lines[0] and "Traceback" not in run.stderr.str()
    result = _measure(f"--{name}", value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].endswith(f"'--{name}' (env var: '{SETTINGS[name].env}'): {reason}")


@pytest.mark.parametrize("value", ["EleutherAI/pythia-1b", "lab:tiny-modular@0", "gpt2"])
def test_a_hub_id_a_lab_run_and_a_registry_name_are_model_names(value, tmp_path):
    """Only the form is checked before a run: whether the weights are here is the loader's question."""
    assert SETTINGS["model"].check(value) == value and SETTINGS["model"].check(str(tmp_path)) == str(tmp_path)
    assert SETTINGS["pair"].opens(f"gpt2,{value}") == ("gpt2", value)
    with pytest.raises(SettingsError, match="unknown model 'mistral7b': did you mean mistral-7b"):
        SETTINGS["pair"].opens("mistral7b,mistral-7b-instruct")


def test_a_bad_value_from_the_environment_is_refused_alike(plain_project, monkeypatch):
    monkeypatch.setenv("ATLAS_PROFILE", "nightly")
    reason = "unknown profile 'nightly': use quick or full"
    run = plain_project.runpytest("-p", "no:cacheprovider")
    assert run.ret == pytest.ExitCode.USAGE_ERROR and reason in run.stderr.str()
    result = CliRunner().invoke(main, ["calibrate", "P5d"])
    assert result.exit_code == 2 and reason in result.output


def _constants(tree: ast.AST):
    """The constants of a module's code, its docstrings left out."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and id(node) not in docstrings]


def test_no_module_restates_a_default():
    """The store's URL, the default model and the default profile's name are written once: in the table, the
    model also in its registry (_registry), the profile's name beside the profiles (and by the simulator of the quick
    profile's own memory seeds). The bootstrap resamples are the profiles' alone: no summary or setting takes
    a number of its own by default."""
    package = Path(atlas.__file__).parent
    model, db, profile = SETTINGS["model"].default, SETTINGS["db"].default, SETTINGS["profile"].default
    allowed = {"_options.py": {model, db}, "_registry.py": {model}, "_profiles.py": {profile},
               "simulate/memory.py": {profile}}
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{where}:{c.lineno}: {c.value!r}" for c in _constants(tree)
                  if c.value in (model, db, profile) and c.value not in allowed.get(where, set())]
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args[len(node.args.args) - len(node.args.defaults):] + node.args.kwonlyargs
                found += [f"{where}:{node.lineno}: {node.name}({a.arg}={d.value})"
                          for a, d in zip(args, node.args.defaults + node.args.kw_defaults) if "resamples" in a.arg
                          and isinstance(d, ast.Constant) and isinstance(d.value, int) and d.value > 0]
            if isinstance(node, ast.Dict) and where != "_profiles.py":
                found += [f"{where}:{k.lineno}: bootstrap_resamples={v.value}" for k, v in zip(node.keys, node.values)
                          if isinstance(k, ast.Constant) and k.value == "bootstrap_resamples"
                          and isinstance(v, ast.Constant)]
    assert not found, "restated defaults:\n" + "\n".join(found)
