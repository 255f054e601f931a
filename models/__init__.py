"""The model zoo: one folder per trained bundle. Stdlib only."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the bundles shipped in this folder (folders holding a manifest.json)."""
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.json").is_file())


def path(name: str) -> Path:
    """Folder of the bundle ``name``; raises FileNotFoundError naming what exists."""
    folder = MODELS_DIR / name
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no bundle '{name}' in {MODELS_DIR} (available: {', '.join(available()) or 'none'})")
    return folder
