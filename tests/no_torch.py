"""A prelude for probe scripts run in a subprocess: makes `import torch`/`torchaudio` fail as if absent."""

BLOCK_TORCH = """
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by test)")
        return None

sys.meta_path.insert(0, _NoTorch())
"""
