"""The default install stays light: no torch, no CUDA libraries."""

from __future__ import annotations

from importlib.metadata import distributions


def test_no_torch_or_nvidia_packages_installed() -> None:
    names = {(d.metadata["Name"] or "").lower() for d in distributions()}
    heavy = sorted(n for n in names if n == "torch" or n.startswith(("nvidia-", "torch")))
    assert heavy == [], f"the default install pulled {heavy}"
    assert "sentence-transformers" not in names
