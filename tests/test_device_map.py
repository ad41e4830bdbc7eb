"""Models larger than one device (``--atlas-device-map auto``, ``atlas._models.load_model(device_map="auto")``).

On the CPU alone a real split is forced by capping the CPU's memory (``_max_memory``): accelerate keeps the
embedding and the first decoder block on the CPU and offloads the rest to the disk (its modules hold meta
tensors between forward passes, their weights read back from an offload folder at each forward), which is the
placement a 7B model gets on a GPU too small for it, less the GPU. The instruments that run split measure the
same tables on it as on the model loaded whole, bit for bit; the others are refused before they measure, and nothing is
stored. The CUDA paths (several GPUs, bfloat16) are checked by ``benchmarks/cuda_check.py`` on a machine with one.
"""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from atlas import INSTRUMENTS, Refused, Store, load_model, run_instrument
from atlas._cisp import split_refusal
from atlas._errors import SplitRefused
from atlas._models import model_checksum, nonfinite_parameters
from atlas._plan import _input
from atlas._predict import AtlasSession
from atlas.cli import main

#: the CPU's cap that splits tiny-llama (141 kB of float32 weights): embedding and block 0 on the CPU, the rest
#: on the disk
CAP = {"cpu": 120_000}
RUNS_SPLIT = {"perplexity", "coupling", "ablation", "phase_transitions", "algorithmic_branches"}


@pytest.fixture(scope="module")
def whole():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def split():
    return load_model("tiny-llama", device_map="auto", _max_memory=CAP)


def test_a_capped_device_splits_the_model_and_the_run_records_where(split, whole):
    assert split.split and split.devices == ["cpu", "disk"] and split.where == "auto: cpu,disk"
    assert split.device == "cpu"  # where the input embedding executes: where input ids go
    assert split.placement["model.layers.0"] == "cpu" and split.placement["lm_head"] == "disk"
    assert any(p.is_meta for p in split.model.parameters())  # offloaded: not held in memory between passes
    assert split.checksum == whole.checksum == model_checksum(split.model)  # offloaded weights read back
    assert nonfinite_parameters(split.model) == []
    fits = load_model("tiny-llama", device_map="auto")  # room enough: one device, nothing is refused
    assert not fits.split and fits.where == "auto: cpu" and fits.checksum == whole.checksum
    assert not whole.split and whole.where == "cpu" and whole.placement is None
    on_disk = load_model("tiny-llama", device_map="auto", _max_memory={"cpu": 60_000})  # every module on the disk
    assert on_disk.split and on_disk.where == "auto: disk" and on_disk.checksum == whole.checksum


@pytest.mark.parametrize("instrument, settings", [("perplexity", {}), ("coupling", {"max_tokens": 24}),
                                                  ("ablation", {"max_tokens": 64})])
def test_an_instrument_that_runs_split_measures_what_the_whole_model_measures(instrument, settings, split, whole,
                                                                              starter):
    corpus = starter.sample(1)
    on = {lm.where: run_instrument(Store("sqlite://"), lm, corpus, instrument, progress=False,
                                   bootstrap_resamples=50, **settings) for lm in (whole, split)}
    assert on["auto: cpu,disk"].run.device == "auto: cpu,disk" and on["cpu"].run.device == "cpu"
    assert on["auto: cpu,disk"].run.status == "complete"
    for table in INSTRUMENTS[instrument].tables:
        pd.testing.assert_frame_equal(on["auto: cpu,disk"].tables[table], on["cpu"].tables[table], check_exact=True)


def test_a_second_order_instrument_is_refused_on_a_split_model_and_nothing_is_stored(split, whole, starter):
    store = Store("sqlite://")
    with pytest.raises(SplitRefused) as refused:
        run_instrument(store, split, starter.sample(1), "hessian", progress=False, session="s")
    message = str(refused.value)
    assert isinstance(refused.value, Refused) and "\n" not in message
    assert message.startswith("hessian is refused on tiny-llama, which is split across devices (auto: cpu,disk): "
                              "it differentiates the loss with respect to the parameters")
    assert message.endswith("measure it without --device-map auto, on a device the model fits on")
    assert store.runs() == []
    assert [(e.action, e.instrument, e.reason) for e in store.events("s")] == [("refused", "hessian", message)]
    assert split_refusal(INSTRUMENTS["hessian"], whole) == ""  # on one device, as before


def test_which_instruments_run_split():
    assert {name for name, inst in INSTRUMENTS.items() if inst.runs_split} == RUNS_SPLIT
    assert "functional_call" in INSTRUMENTS["interpolation"].split_refusal


def test_the_plan_says_which_steps_run_split_and_which_are_refused(split, tmp_path):
    session = AtlasSession("tiny-llama", "starter", f"sqlite:///{tmp_path / 'atlas.db'}", tmp_path,
                           device_map="auto")
    session._models["tiny-llama"] = split
    _, perplexity = _input(session, "tiny-llama", "perplexity", {}, [])
    assert perplexity.action == "measure" and "runs split across devices (auto: cpu,disk)" in perplexity.note
    _, hessian = _input(session, "tiny-llama", "hessian", {}, [])
    assert hessian.action == "not run"
    assert hessian.note.startswith("refused by CISP: hessian is refused on tiny-llama, which is split across devices")


def test_a_bad_device_map_is_a_usage_error_in_both(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    run = pytester.runpytest("--atlas-device-map=balanced", "-p", "no:cacheprovider")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert "--atlas-device-map: unknown device-map 'balanced': use none or auto" in run.stderr.str()
    result = CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--db", "sqlite://",
                                       "--device-map", "balanced"])
    assert result.exit_code == 2 and "unknown device-map 'balanced': use none or auto" in result.output


def test_a_checkpoint_folder_loads_straight_into_its_places(whole, tmp_path, starter):
    """The path of a real large model: ``from_pretrained(device_map="auto")``, never whole on one device."""
    whole.model.save_pretrained(tmp_path)
    whole.tokenizer.save_pretrained(tmp_path)
    split = load_model(str(tmp_path), device_map="auto", _max_memory={"cpu": 120_000})
    assert split.split and split.devices == ["cpu", "disk"] and split.checksum == whole.checksum
    on = [run_instrument(Store("sqlite://"), lm, starter.sample(1), "perplexity", progress=False,
                         bootstrap_resamples=50) for lm in (load_model(str(tmp_path)), split)]
    assert on[1].run.device == "auto: cpu,disk"
    pd.testing.assert_frame_equal(on[1].tables["perplexity"], on[0].tables["perplexity"], check_exact=True)
