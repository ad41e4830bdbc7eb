"""No network, and no secrets in output.

Every test runs with outbound sockets blocked but for loopback (``tests/conftest.py``); these tests show
the block holds and that the hub and great-expectations stay offline. A store URL's password never appears
in anything Atlas prints, writes or stores: terminal output of pytest and of the CLI, the report, the
protocol log, stored provenance, error messages.
"""

import os
import socket
import subprocess
import sys

import pytest
from _support import REPO, all_text, atlas_command, child_env, record
from sqlalchemy import make_url

from atlas import ModelUnavailable, Store, load_model

pytestmark = pytest.mark.reliability


def test_outbound_sockets_are_blocked_and_loopback_is_not(network_attempts):
    blocked = "tests may not use the network"
    for address in (("192.0.2.1", 443), ("2001:db8::1", 443)):  # documentation ranges: never sent anyway
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s, pytest.raises(RuntimeError, match=blocked):
            s.connect(address)
    with pytest.raises(RuntimeError, match=blocked):
        socket.getaddrinfo("huggingface.co", 443)
    assert len(network_attempts) == 3
    network_attempts.clear()  # this test's own attempts, on purpose
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_the_hub_and_great_expectations_are_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["GX_ANALYTICS_ENABLED"] == "false"
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE is set"):
        load_model("openai-community/gpt2", device="cpu")  # a hub id not in the cache: never fetched


def _password_url(postgres_url: str) -> tuple[str, str]:
    url = make_url(postgres_url)
    assert url.password, "the test server's URL carries a password"
    return postgres_url, url.password


def test_a_password_never_leaves_in_output_reports_or_rows(postgres_url, tmp_path, tiny_corpus):
    url, password = _password_url(postgres_url)
    outputs = []
    predictions = [str(REPO / "predictions" / "test_seed_perplexity_map.py")]
    done = subprocess.run([sys.executable, "-m", "pytest", *predictions, "-p", "no:cacheprovider", "-rA",
                           "--atlas-model", "tiny-gpt2", "--atlas-corpus", str(tiny_corpus), "--atlas-db", url,
                           "--atlas-reports", str(tmp_path / "reports")], env=child_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    outputs += [done.stdout, done.stderr]
    assert "***@" in done.stdout  # the store is named, masked
    for args in (["measure", "perplexity", "--model", "tiny-gpt2", "--corpus", tiny_corpus, "--db", url],
                 ["verdicts", "--db", url], ["report", "--db", url, "--out", tmp_path / "reports2"],
                 ["export", Store(url).runs()[0].id, "--db", url, "--out", tmp_path / "export"],
                 ["measure", "perplexity", "--model", "tiny-gpt2", "--corpus", "nope.jsonl", "--db", url],
                 ["verdicts", "--db", url.replace("@127.0.0.1:", "@127.0.0.1:1")]):  # an error message
        done = atlas_command(*args)
        outputs += [done.stdout, done.stderr]
    files = [p.read_text(encoding="utf-8", errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in [*outputs, *files, all_text(url)]:
        assert password not in text
    record("outputs searched for a store password (none found)", len(outputs) + len(files) + 1)


def test_a_password_in_an_unusable_url_is_masked_in_the_error():
    for url in ("postgresql+psycopg://atlas:hunter2@127.0.0.1:1/atlas", "nosuch://atlas:hunter2@host/db",
                "mysql://atlas:hunter2@host/db"):
        done = atlas_command("verdicts", "--db", url)
        assert done.returncode == 2 and "hunter2" not in done.stdout + done.stderr and "***" in done.stderr
    record("outputs searched for a store password (none found)", 3)
