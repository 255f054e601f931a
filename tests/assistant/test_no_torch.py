"""The hub runtime must work with the base install: no torch anywhere in `assistant`."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import assistant
from tests.no_torch import BLOCK_TORCH

ROOT = Path(__file__).resolve().parents[2]

# Makes `import torch` (and torchaudio) fail as if they were not installed, then imports
# every module of the assistant package.
_PROBE = BLOCK_TORCH + """
import importlib, pkgutil, sys
import assistant
names = [m.name for m in pkgutil.walk_packages(assistant.__path__, "assistant.")]
for name in names:
    importlib.import_module(name)
assert not any(m.split(".")[0] in ("torch", "torchaudio") for m in sys.modules)
print(len(names))
"""


def test_every_assistant_module_imports_without_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    expected = len(list(pkgutil.walk_packages(assistant.__path__, "assistant.")))
    assert int(done.stdout.strip()) == expected >= 2


def test_no_source_file_in_assistant_mentions_torch_imports() -> None:
    for path in (ROOT / "assistant").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
