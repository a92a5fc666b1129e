"""Freshness: how soon a live gateway answers from a document a user has just ingested, and how soon it
stops after the user deletes it, while other clients keep asking (issue 24):

    python bench/freshness.py [--repeats 5] [--clients 2] [--model DIR] [--out bench/out/freshness]

One `python -m service` (the `tiny` preset with random weights unless --model names a checkpoint, as in
bench/gateway.py) serves an index of the tiny world's docs_post. `--clients` background clients send
`POST /ask` in a loop (rag, long_context, auto, closed_book in turn) on the world's own questions. Each
repeat then does what a user would, in separate processes:

1. writes a new document (invented names, dated after every other document, so that long_context packs
   it first) to a folder of its own and runs `python -m indexer ingest FOLDER`;
2. asks `/ask` rag a question only that document answers, every `--probe-interval` seconds, until the
   document is among the answer's sources: seconds to visible, from the command's start and from its
   exit (negative when the gateway served it before the process had finished exiting);
3. runs `python -m indexer delete SOURCE` and asks rag, long_context and auto (the strategies that read
   documents; closed_book and cpt report no sources) until none of them has it among its sources or
   citations: seconds to gone, the slowest of the three; a `compare` request then confirms.

The gateway is never restarted: a new document can only appear through `IndexRetriever` loading the new
index generation by itself. A deletion does not need that reload (the retriever hydrates hits from the
database, and long_context reads the database), so "gone" measures the delete command and the database.

The served model is untrained, so its answer text means nothing: a document counts as used when the
answer reports it among its `sources` (the passages in the prompt) or `citations`, by its `source` id.
The answer that first shows the document carries the version the ingest committed (or a later one);
the one that first does not may still carry the version before the delete (`gone_with_older_version`):
the retriever reads the version, searches that generation, then reads the passages from the database,
where the delete may have committed in between.

Every background request's status is kept: the table gives those overlapping each repeat (from the
ingest's start to gone) as sent / ok / errors, an error being any non-200 or a request that failed or
never came back. Results: `--out`/results.json; the gateway's log beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx

from bench.corpus import OUT
from bench.gateway import build_tiny, prepare
from core.logging import setup_logging

ROOT = Path(__file__).resolve().parents[1]
LOAD_STRATEGIES = ("rag", "long_context", "auto", "closed_book")
READERS = ("rag", "long_context", "auto")  # the /ask strategies whose answers report documents
TIMES = ("ingest_s", "visible_from_start_s", "visible_from_exit_s", "delete_s", "gone_from_start_s",
         "gone_from_exit_s")  # fmt: skip
SYLLABLES = ("zor", "vath", "quel", "lin", "mar", "besk", "tiv", "oru", "kesh", "dran", "ulm", "pyr",
             "ost", "yen", "gald", "rix", "ebb", "sor", "thal", "wun")  # fmt: skip


@dataclass(frozen=True)
class FreshDoc:
    """A document no other one resembles, and the question only it answers."""

    source: str
    title: str
    date: dt.date
    body: str
    question: str

    @classmethod
    def make(cls, n: int, date: dt.date) -> FreshDoc:
        rng = random.Random(f"freshness-{n}")

        def name() -> str:
            return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()

        place, town, first, last = name(), name(), name(), name()
        return cls(
            source=f"freshness-{n:03d}",
            title=f"{first} {last} designs the {place} Observatory",
            date=date,
            body=(
                f"The {place} Observatory in {town} opened on {date:%B %d, %Y}. It was designed by the "
                f"architect {first} {last}, who also built its {name()} telescope."
            ),
            question=f"Who designed the {place} Observatory in {town}?",
        )

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.source}.md").write_text(
            f'---\ntitle: "{self.title}"\ndate: {self.date.isoformat()}\nsource: {self.source}\n---\n'
            f"{self.body}\n"
        )
        return folder


def ask_sources(client: httpx.Client, question: str, strategy: str) -> tuple[set[str], int | None]:
    """The `source` of every document an /ask answer reports (sources and citations; for compare, every
    strategy's), and the index version it read."""
    r = client.post("/ask", json={"question": question, "strategy": strategy, "max_tokens": 1})
    if r.status_code != 200:
        raise RuntimeError(f"/ask {strategy}: {r.status_code} {r.text[:500]}")
    body = r.json()
    answers = [a for a in body["answers"].values() if "error" not in a] if strategy == "compare" else [body]
    found = {c["source"] for a in answers for c in [*a["sources"], *a["citations"]]}
    return found, body.get("index_version")


class Command:
    """A command line run as its own process, as a user would run it; its start and exit times kept."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.exit: float | None = None
        self.stdout = self.stderr = ""
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        self.stdout, self.stderr = self.proc.communicate()
        self.exit = time.perf_counter()

    def overdue(self, bound: float) -> bool:
        """Whether the command exited more than `bound` seconds ago (raises if it failed)."""
        if self.exit is not None and self.proc.returncode:
            self.result()
        return self.exit is not None and time.perf_counter() > self.exit + bound

    def result(self, timeout: float = 300) -> dict[str, Any]:
        """The command's --json summary, once it has exited 0."""
        self._waiter.join(timeout)
        if self.exit is None or self.proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.argv)} failed ({self.proc.returncode}):\n{self.stderr[-3000:]}"
            )
        summary: dict[str, Any] = json.loads(self.stdout)
        return summary


@dataclass
class Request:
    start: float
    end: float | None = None
    status: int | None = None
    error: str | None = None


@dataclass
class Load:
    """`clients` threads, each sending /ask in a loop over the questions and strategies until stopped."""

    url: str
    questions: list[str]
    clients: int
    max_tokens: int = 16
    requests: list[Request] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for c in range(self.clients):
            thread = threading.Thread(target=self._client, args=(c,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _client(self, c: int) -> None:
        i = c
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self._stop.is_set():
                strategy = LOAD_STRATEGIES[i % len(LOAD_STRATEGIES)]
                body = {"question": self.questions[i % len(self.questions)], "strategy": strategy,
                        "max_tokens": self.max_tokens}  # fmt: skip
                req = Request(time.perf_counter())
                self.requests.append(req)
                try:
                    r = client.post("/ask", json=body)
                    req.status = r.status_code
                    if r.status_code != 200 or "text" not in r.json():
                        req.error = f"{strategy}: {r.status_code} {r.text[:300]}"
                except (httpx.HTTPError, ValueError) as e:
                    req.error = f"{strategy}: {type(e).__name__}: {e}"
                req.end = time.perf_counter()
                i += self.clients

    def stop(self, timeout: float = 150) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """The requests in flight at any moment of [start, end]: sent, ok, errors (a request that never
        came back counts as an error), and the first few errors."""
        inside = [r for r in list(self.requests) if r.start <= end and (r.end is None or r.end >= start)]
        bad = [r.error or "no response" for r in inside if r.end is None or r.error is not None]
        return {
            "sent": len(inside),
            "ok": len(inside) - len(bad),
            "errors": len(bad),
            "first_errors": bad[:5],
        }


def cycle(
    url: str, env: dict[str, str], doc: FreshDoc, folder: Path, interval: float, bound: float
) -> dict[str, Any]:
    """Ingest `doc` and wait for rag to show it; delete it and wait for every reader to drop it."""
    base = [sys.executable, "-m", "indexer"]
    with httpx.Client(base_url=url, timeout=120) as client:
        ingest = Command([*base, "ingest", str(doc.write(folder)), "--json"], env)
        misses, seen, version = 0, None, None
        while seen is None:
            if ingest.overdue(bound):
                raise RuntimeError(f"{doc.source} not retrieved by rag {bound} s after the ingest exited")
            found, version = ask_sources(client, doc.question, "rag")
            if doc.source in found:
                seen = time.perf_counter()
            else:
                misses += 1
                time.sleep(interval)
        committed = ingest.result()["index_version"]
        before = {m: doc.source in ask_sources(client, doc.question, m)[0] for m in READERS}

        delete = Command([*base, "delete", doc.source, "--json"], env)
        pending, gone, gone_versions = list(READERS), {}, {}
        while pending:
            if delete.overdue(bound):
                raise RuntimeError(f"{doc.source} still in {pending} {bound} s after the delete exited")
            for mode in list(pending):
                found, at = ask_sources(client, doc.question, mode)
                if doc.source not in found:
                    gone[mode], gone_versions[mode] = time.perf_counter(), at
                    pending.remove(mode)
            if pending:
                time.sleep(interval)
        deleted = delete.result()["index_version"]
        confirmed = doc.source not in ask_sources(client, doc.question, "compare")[0]
    assert ingest.exit is not None and delete.exit is not None
    last_gone = max(gone.values())
    return {
        "source": doc.source,
        "question": doc.question,
        "ingest_s": ingest.exit - ingest.start,
        "visible_from_start_s": seen - ingest.start,
        "visible_from_exit_s": seen - ingest.exit,
        "probes_before_visible": misses,
        "committed_version": committed,
        "visible_version": version,
        "readers_saw_it": before,
        "delete_s": delete.exit - delete.start,
        "gone_from_start_s": last_gone - delete.start,
        "gone_from_exit_s": last_gone - delete.exit,
        "gone_by_mode_s": {m: t - delete.start for m, t in gone.items()},
        "deleted_version": deleted,
        "gone_versions": gone_versions,
        "gone_with_older_version": [m for m, v in gone_versions.items() if v is None or v < deleted],
        "compare_confirms_gone": confirmed,
        "_window": (ingest.start, last_gone),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(env: dict[str, str], log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    port = free_port()
    full = {**env, "KC_HOST": "127.0.0.1", "KC_PORT": str(port)}
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=full, stdout=fh, stderr=fh)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the gateway was not ready in {timeout} s; see {log}")


def table(rows: list[dict[str, Any]], median: dict[str, float]) -> list[str]:
    header = ("repeat", "ingest s", "visible from start s", "visible from exit s", "delete s",
              "gone from start s", "gone from exit s", "load sent/ok/errors")  # fmt: skip
    total = {k: sum(r["load"][k] for r in rows) for k in ("sent", "ok", "errors")}
    named = [*((str(i), r, r["load"]) for i, r in enumerate(rows, start=1)), ("median", median, total)]
    lines = [
        (name, *(f"{r[k]:.2f}" for k in TIMES), f"{load['sent']}/{load['ok']}/{load['errors']}")
        for name, r, load in named
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *lines]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="add/delete cycles, each with a new document")
    parser.add_argument("--clients", type=int, default=2, help="background clients asking in a loop")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: tiny preset, random)")
    parser.add_argument("--load-tokens", type=int, default=16, help="max_tokens of a background request")
    parser.add_argument("--probe-interval", type=float, default=0.2, help="seconds between probe rounds")
    parser.add_argument("--bound", type=float, default=120, help="give up this long after a command exits")
    parser.add_argument("--settle", type=float, default=3, help="seconds of load before the first repeat")
    parser.add_argument("--out", type=Path, default=OUT / "freshness")
    args = parser.parse_args()
    if args.repeats < 1 or args.clients < 0:
        parser.error("--repeats must be >= 1 and --clients >= 0")
    setup_logging("WARNING")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("home", "new"):  # every run starts from the world's index alone
        shutil.rmtree(args.out / stale, ignore_errors=True)
    world, settings, questions = prepare(args.out)
    model_dir = (args.model or build_tiny(args.out / "model-tiny", world)).resolve()
    env = {**os.environ, "KC_HOME": str(settings.home), "KC_MODEL": str(model_dir), "KC_LOG_LEVEL": "INFO"}
    gateway, url = start_gateway(env, args.out / "gateway.log")
    load = Load(url, questions, args.clients, args.load_tokens)
    rows: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for q in questions[:4]:  # every path once before the clock runs
                for strategy in LOAD_STRATEGIES:
                    ask_sources(client, q, strategy)
        load.start()
        time.sleep(args.settle)
        start = dt.date(2030, 1, 1)  # after every document of the world
        for n in range(1, args.repeats + 1):
            doc = FreshDoc.make(n, start + dt.timedelta(days=n))
            row = cycle(url, env, doc, args.out / "new" / f"r{n:02d}", args.probe_interval, args.bound)
            rows.append(row)
            seen, gone = row["visible_from_start_s"], row["gone_from_start_s"]
            print(f"repeat {n}: visible after {seen:.2f} s, gone after {gone:.2f} s", file=sys.stderr)
    finally:
        load.stop()
        gateway.terminate()
        gateway.wait(timeout=30)
    for row in rows:  # once the load has stopped: a request still in flight at a cycle's end is not lost
        row["load"] = load.window(*row.pop("_window"))
    median = {k: statistics.median(r[k] for r in rows) for k in TIMES}
    overall = load.window(0.0, time.perf_counter())
    result = {
        "model": str(model_dir),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "repeats": rows,
        "median": median,
        "load_whole_run": overall,
        "load_requests": [asdict(r) for r in load.requests],
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"model: {model_dir}; {args.clients} background clients; probe every {args.probe_interval} s")
    print("\n".join(table(rows, median)))
    checks = [
        ("every reader showed the document before the delete",
         all(all(r["readers_saw_it"].values()) for r in rows)),
        ("rag showed it with the version its ingest committed",
         all(r["visible_version"] >= r["committed_version"] for r in rows)),
        ("compare confirmed it gone", all(r["compare_confirms_gone"] for r in rows)),
        ("background load: no errors, nothing lost", overall["errors"] == 0),
    ]  # fmt: skip
    for what, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print(
        f"the freshness the service promises (median of {len(rows)}): a new document is retrieved "
        f"{median['visible_from_start_s']:.1f} s after `indexer ingest` starts "
        f"({median['visible_from_exit_s']:+.1f} s from its exit); a deleted one is gone from every strategy "
        f"{median['gone_from_start_s']:.1f} s after `indexer delete` starts "
        f"({median['gone_from_exit_s']:+.1f} s from its exit)"
    )
    print(f"results: {args.out / 'results.json'}; background requests in the whole run: "
          f"{overall['sent']} sent, {overall['ok']} ok, {overall['errors']} errors")  # fmt: skip


if __name__ == "__main__":
    main()
