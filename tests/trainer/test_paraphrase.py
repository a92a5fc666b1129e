"""Paraphrase augmentation: the rule-based and model-based rephrasers, and the world's template re-renders."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from trainer.paraphrase import paraphrase_documents, reorder_clauses, rule_paraphrases

NEWS = (
    "On 2025-03-02, Kelvor Dynamics launched the Vexa 3. The Vexa 3 is a drone. "
    "Kelvor Dynamics has moved its headquarters to Ardent."
)


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("On 2025-03-02, Kelvor Dynamics launched the Vexa 3.",
         "Kelvor Dynamics launched the Vexa 3 on 2025-03-02."),
        ("Kelvor Dynamics launched the Vexa 3 on 2025-03-02.",
         "On 2025-03-02, Kelvor Dynamics launched the Vexa 3."),
        ("Ardent now has a population of 41200, a new census says.",
         "A new census says that Ardent now has a population of 41200."),
        # the comma inside a date is not the end of the leading phrase
        ("On January 4, 2025, the Dapaik Fair took place in Korme.",
         "The Dapaik Fair took place in Korme on January 4, 2025."),
        ("The Vexa 3 is a drone.", None),
    ],
)  # fmt: skip
def test_clause_rules(sentence: str, expected: str | None) -> None:
    assert reorder_clauses(sentence) == expected


def test_rule_paraphrases_are_distinct_and_keep_every_sentence() -> None:
    versions = rule_paraphrases(NEWS, 3, random.Random(0))
    assert len(versions) == 3 and len(set(versions)) == 3 and NEWS not in versions
    for v in versions:
        assert "Vexa 3 is a drone." in v and "2025-03-02" in v and "Ardent" in v
    assert rule_paraphrases("The Vexa 3 is a drone.", 3, random.Random(0)) == []  # nothing to vary


def test_paraphrase_count_is_reported() -> None:
    docs = [("a", NEWS), ("b", "The Vexa 3 is a drone."), ("c", "Mira Olsen joined Kelvor Dynamics in 2025.")]
    result = paraphrase_documents(docs, 2, "rule", seed=1)
    assert result.asked == 6 and result.documents == 3
    assert result.produced == len(result.texts) and {d for d, _ in result.texts} == {"a", "c"}
    assert "texts from 3 documents" in result.summary()
    assert paraphrase_documents(docs, 0).produced == 0


def test_model_paraphraser_asks_an_openai_compatible_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_API_KEY", "secret")
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer secret"
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={"choices": [{"message": {"content": f"Rewrite {len(seen)}."}}]})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    result = paraphrase_documents([("a", NEWS), ("b", "Short.")], 3, "model", url="http://gw/v1",
                                  model="keepcurrent", client=client)  # fmt: skip
    assert result.produced == 6 and len(seen) == 6
    assert seen[0]["model"] == "keepcurrent" and NEWS in seen[0]["messages"][0]["content"]  # type: ignore[index]


def test_model_paraphraser_errors_name_the_endpoint() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(401, text="no key")))
    with pytest.raises(ValueError, match="answered 401"):
        paraphrase_documents([("a", NEWS)], 1, "model", url="http://gw/v1", client=client)
    with pytest.raises(ValueError, match="--paraphrase-url"):
        paraphrase_documents([("a", NEWS)], 1, "model")


def test_world_news_paraphrases_from_templates(nano_world: Path, tmp_path: Path) -> None:
    from eval.world.paraphrase import main as paraphrase_main
    from eval.world.paraphrase import write_paraphrases

    summary = write_paraphrases(nano_world, 3, tmp_path / "para")
    files = sorted((tmp_path / "para").glob("*.md"))
    assert summary["news"] == 16 and summary["paraphrases"] == len(files) and 16 <= len(files) <= 48
    original = {p.stem: p.read_text().split("\n---\n", 1)[1] for p in (nano_world / "docs_post").glob("*.md")}
    for f in files:
        body = f.read_text().split("\n---\n", 1)[1]
        source = f.stem.rsplit("-p", 1)[0]
        assert body != original[source]
        # the same facts: the same capitalised names and numbers, in another wording or order
        words = {w.strip(".,") for w in body.split() if w[:1].isupper() or w[:1].isdigit()}
        assert words <= {w.strip(".,") for w in original[source].split()} | {"On", "The", "A", "New"}
    assert paraphrase_main(["--world", str(tmp_path), "--k", "2"]) == 2  # not a world folder
