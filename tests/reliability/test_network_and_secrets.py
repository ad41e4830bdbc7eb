"""No network, and no secrets in output.

Every test runs with outbound sockets blocked but for loopback (``tests/conftest.py``); these tests show
the block holds and that the hub and great-expectations stay offline. A store URL's password never appears
in anything Atlas prints, writes or stores: terminal output of pytest and of the CLI, the report, the
protocol log, stored provenance, exports, error messages. The URLs are generated (hypothesis): passwords of
letters and reserved characters (``@ : / ? # % ...``, unencoded or percent-encoded) in the user information,
in secret query parameters (``?password=``, ``sslpassword``, ``token`` ...), in libpq connection strings and
in URLs SQLAlchemy cannot parse; a password is made of marked words, and no word may appear anywhere.
"""

import os
import socket
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest
from _support import FUZZ_EXAMPLES, NOT_RUN, REPO, all_text, atlas_command, child_env, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import make_url

from atlas import AtlasError, ModelUnavailable, Store, load_model
from atlas._store import check_store_url
from atlas._urls import redact, shown_url

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


# --- generated URLs -------------------------------------------------------------------------------------------

#: a word of a password: marked, so that finding it in an output cannot be chance
WORDS = st.text("abcdefghijklmnopqrstuvwxyz", min_size=4, max_size=8).map(lambda w: f"Zq{w}")
RESERVED = "@:/?#[]!$&'()*+,;=% \"~"
SECRET_NAMES = st.sampled_from(["password", "passwd", "pwd", "sslpassword", "sslkey", "secret", "token",
                                "api_key", "PASSWORD", "client_secret"])


def _password(words: list[str], separators: list[str]) -> str:
    return "".join(w + s for w, s in zip(words, separators + [""] * len(words), strict=False))


@st.composite
def secret_urls(draw) -> tuple[str, list[str]]:
    """A store URL holding a password in one of its forms, and the marked words of that password."""
    words = draw(st.lists(WORDS, min_size=1, max_size=3))
    form = draw(st.sampled_from(["userinfo", "userinfo-encoded", "query", "query-encoded", "dsn", "dsn-quoted",
                                 "unparsable", "sqlite-query"]))
    allowed = {"query": RESERVED.replace("&", "").replace(" ", ""), "dsn": RESERVED.replace(" ", "").replace("'", "")
               .replace("\\", "")}.get(form, RESERVED)
    separators = draw(st.lists(st.sampled_from(allowed), max_size=len(words)))
    password = _password(words, separators)
    host = draw(st.sampled_from(["127.0.0.1:1", "[::1]:1"]))  # loopback, nothing listening: refused at once
    extra = draw(st.sampled_from(["", "&sslmode=disable", "&application_name=atlas"]))
    name = draw(SECRET_NAMES)
    url = {"userinfo": f"postgresql+psycopg://atlas:{password}@{host}/atlas",
           "userinfo-encoded": f"postgresql+psycopg://atlas:{quote(password, safe='')}@{host}/atlas",
           "query": f"postgresql+psycopg://atlas@{host}/atlas?{name}={password}{extra}",
           "query-encoded": f"postgresql+psycopg://atlas@{host}/atlas?{name}={quote_plus(password)}{extra}",
           "dsn": f"host={host} user=atlas {name}={password} dbname=atlas",
           "dsn-quoted": "host=db user=atlas password='{}' dbname=atlas".format(
               password.replace("\\", "\\\\").replace("'", "\\'")),
           "unparsable": f"no-such+driver://atlas:{password}@{host}/atlas",
           "sqlite-query": f"sqlite:///atlas.db?{name}={quote_plus(password)}{extra}"}[form]
    return url, words


def _outputs(url: str) -> list[str]:
    """Everything Atlas shows of ``url`` in-process: its shown form, the error checking or opening it gives,
    and a driver error that quotes it."""
    shown = [shown_url(url), redact(f"could not connect with {url}", url)]
    try:
        if not url.startswith("sqlite"):  # a reachable SQLite file is opened by the commands below
            Store(url)
        else:
            check_store_url(url)
    except AtlasError as exc:
        shown.append(str(exc))
    return shown


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret_urls())
def test_a_generated_password_is_masked_in_every_shown_url_and_error(case):
    url, words = case
    for text in _outputs(url):
        leaked = [w for w in words if w in text]
        assert not leaked, (url, text)
    record("generated store URLs checked for a password (none shown)", 1)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(words=st.lists(WORDS, min_size=2, max_size=3), separators=st.lists(st.sampled_from(RESERVED), min_size=1,
                                                                           max_size=2),
       name=SECRET_NAMES)
def test_a_generated_password_never_leaves_the_commands(tmp_path_factory, words, separators, name):
    """``atlas verdicts`` and ``atlas report`` on a reachable store whose URL holds the password in its query
    string, and the error of an unreachable server holding it, unencoded, in its user information."""
    password = _password(words, separators)
    folder = tmp_path_factory.mktemp("secret")
    url = f"sqlite:///{folder / 'atlas.db'}?{name}={quote_plus(password)}"
    Store(url).engine.dispose()
    outputs = []
    for args in (["verdicts", "--db", url],
                 ["report", "--db", url, "--out", folder / "reports"],
                 ["verdicts", "--db", f"postgresql+psycopg://atlas:{password}@127.0.0.1:1/atlas"]):
        done = atlas_command(*args)
        outputs += [done.stdout, done.stderr]
    assert "password" not in name or f"{name}=***" in (folder / "reports" / "index.html").read_text()
    files = [p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*.html")]
    for text in [*outputs, *files, all_text(url)]:
        assert not [w for w in words if w in text], text[-2000:]
    record("outputs searched for a generated store password (none found)", len(outputs) + len(files) + 1)


def test_a_query_string_password_never_leaves_pytest(tmp_path):
    """The plugin names the store in its summary, masked, and writes the report; the password in ``?password=``
    (with an unencoded ``@`` and ``:``) appears nowhere."""
    (tmp_path / "test_not_run.py").write_text(NOT_RUN)
    url = f"sqlite:///{tmp_path / 'atlas.db'}?password=ZqSecret@one:two&sslmode=disable"
    done = subprocess.run([sys.executable, "-m", "pytest", "test_not_run.py", "-p", "no:cacheprovider", "-rA",
                           f"--atlas-db={url}", f"--atlas-reports={tmp_path / 'reports'}"],
                          env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "password=***" in done.stdout, done.stdout + done.stderr
    files = [p.read_text(encoding="utf-8", errors="replace") for p in tmp_path.rglob("*.html")]
    for text in [done.stdout, done.stderr, *files, all_text(url)]:
        assert "ZqSecret" not in text
