"""What the tests of a Ray cluster share: a module of two cheap predictions and the local cluster's address."""

import os

import pytest

#: two predictions on tiny models: perplexity below 1e9, and mean coupling below THRESHOLD (``predictions()``)
_MODULE = '''
import pytest
from atlas import Criterion

@pytest.mark.prediction(id="T-ppl", claim="perplexity stays below 1e9", needs=("perplexity",),
                        criterion=Criterion("mean ppl", "<", 1e9, scale="ratio"))
def test_ppl(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))

@pytest.mark.prediction(id="T-coupling", claim="coupling stays below THRESHOLD", needs=("coupling",),
                        criterion=Criterion("mean coupling", "<", THRESHOLD))
def test_coupling(prediction):
    c = prediction.evidence["coupling"]["coupling"]["coupling"]
    prediction.conclude(effect=float(c.mean()), ci=(float(c.min()), float(c.max())), n=len(c))
'''


def predictions(threshold: float = 2.0) -> str:
    """The module's text, its coupling claim against ``threshold`` (2: supported; −1: refuted)."""
    return _MODULE.replace("THRESHOLD", repr(threshold))


def ray_address() -> str:
    """The local Ray cluster .ci/run starts (``.ci/ray``); the test is skipped, saying so, without one."""
    address = os.environ.get("ATLAS_TEST_RAY_ADDRESS", "")
    if not address:
        pytest.skip("ATLAS_TEST_RAY_ADDRESS is not set: no local Ray cluster for this run (.ci/run starts one)")
    return address
