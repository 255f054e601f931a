"""The training loop: schedule, exact resume, a 2-process DDP run, early stopping."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.errors import ConfigError  # noqa: E402
from distill.teachers.neural import EncoderHead, HeadConfig  # noqa: E402
from distill.train import Batch, TrainConfig, batch_indices, fit, load_checkpoint, lr_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _toy(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frames whose class is written into one feature dimension: learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = 0.1 * torch.randn(n, 6, 16, generator=gen)
    x[torch.arange(n), :, y] += 2.0
    return x, [y]


def _make(x: torch.Tensor, ys: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    def make_batch(idx: np.ndarray, step: int) -> Batch:
        t = torch.from_numpy(idx)
        return Batch(inputs=x[t], targets=[y[t] for y in ys])

    return make_batch


def _accuracy(x: torch.Tensor, ys: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    @torch.no_grad()
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        pred = model(x)[0].argmax(dim=1)
        return {"command_acceptance": float((pred == ys[0]).float().mean())}

    return evaluate


def _model() -> EncoderHead:
    torch.manual_seed(0)
    return EncoderHead([3], HeadConfig(d_in=16, hidden=16, dropout=0.1))


def test_lr_schedule() -> None:
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    assert np.array_equal(batch_indices(50, 7, cfg), batch_indices(50, 7, cfg))
    assert not np.array_equal(batch_indices(50, 7, cfg), batch_indices(50, 8, cfg))


def test_learns_and_resumes_exactly(tmp_path: Path) -> None:
    x, ys = _toy()
    cfg = TrainConfig(steps=40, batch_size=16, lr=1e-2, min_lr=1e-3, warmup=5, eval_every=20)
    straight = _model()
    best = fit(straight, _make(x, ys), len(x), _accuracy(x, ys), cfg, tmp_path / "a", progress=False)
    assert best["command_acceptance"] > 0.9

    make = _make(x, ys)

    def crashing(idx: np.ndarray, step: int) -> Batch:
        if step == 25:
            raise KeyboardInterrupt  # the machine goes away mid-run; last.pt is from step 20
        return make(idx, step)

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), crashing, len(x), _accuracy(x, ys), cfg, tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 20
    # A fresh process rebuilds the model from scratch and finds last.pt.
    resumed = _model()
    fit(resumed, _make(x, ys), len(x), _accuracy(x, ys), cfg, tmp_path / "b", progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["step"] == 40 and ckpt["train_config"]["steps"] == 40
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == 3  # header + 2 evaluations
    # A run with other settings would silently mix two recipes: refused, naming what changed.
    longer = TrainConfig(steps=80, batch_size=16, lr=1e-2, min_lr=1e-3, warmup=5, eval_every=20)
    with pytest.raises(ConfigError, match=r"cannot resume: this run changes steps 40 -> 80"):
        fit(_model(), _make(x, ys), len(x), _accuracy(x, ys), longer, tmp_path / "b", progress=False)
    # evaluation cadence does not change the weights: allowed
    fit(_model(), _make(x, ys), len(x), _accuracy(x, ys), replace(cfg, eval_every=10), tmp_path / "b", progress=False)
    # a checkpoint from before an option existed was trained with its default: switching it on is refused too
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    del ckpt["train_config"]["length_buckets"]
    torch.save(ckpt, tmp_path / "b" / "last.pt")
    with pytest.raises(ConfigError, match=r"changes length_buckets 0 -> 4"):
        fit(_model(), _make(x, ys), len(x), _accuracy(x, ys), replace(cfg, length_buckets=4), tmp_path / "b",
            progress=False)


def test_length_buckets_draw_a_batch_of_similar_lengths() -> None:
    lengths = np.random.default_rng(1).integers(50, 500, size=1000)
    cfg = TrainConfig(batch_size=32, length_buckets=10)
    group_of = np.empty(1000, dtype=int)  # the pool sorted by length, cut into ten groups of 100
    for g, members in enumerate(np.array_split(np.argsort(lengths, kind="stable"), 10)):
        group_of[members] = g
    seen = set()
    for step in range(200):
        idx = batch_indices(1000, step, cfg, lengths=lengths)
        assert len(idx) == 32 and np.array_equal(idx, batch_indices(1000, step, cfg, lengths=lengths))
        assert len(set(group_of[idx])) == 1
        seen.add(int(group_of[idx[0]]))
        assert lengths[idx].max() - lengths[idx].min() < 100  # a tenth of a 50..500 spread, give or take
    assert seen == set(range(10))  # every group gets drawn
    # a DDP rank takes its share of the same batch
    both = batch_indices(1000, 3, cfg, lengths=lengths)
    assert np.array_equal(batch_indices(1000, 3, cfg, 1, 2, lengths), both[1::2])
    # without lengths (or with one bucket) the draw is the plain uniform one
    assert np.array_equal(batch_indices(1000, 3, cfg), batch_indices(1000, 3, replace(cfg, length_buckets=1), lengths=lengths))
    with pytest.raises(ValueError, match="lengths: expected 1000 values, got 3"):
        batch_indices(1000, 3, cfg, lengths=lengths[:3])
    with pytest.raises(ConfigError, match="length_buckets"):
        TrainConfig(length_buckets=-1)


def test_early_stopping(tmp_path: Path) -> None:
    x, ys = _toy()
    cfg = TrainConfig(steps=400, batch_size=16, lr=1e-2, min_lr=1e-3, warmup=5, eval_every=10, patience=2)
    fit(_model(), _make(x, ys), len(x), lambda m: {"command_acceptance": 0.5}, cfg, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 30  # 1 best, then 2 without improvement


_DDP_SCRIPT = """
import sys, torch, numpy as np, torch.distributed as dist
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from test_train import _toy, _make, _model
from distill.train import TrainConfig, fit
x, ys = _toy()
model = _model()
cfg = TrainConfig(steps=6, batch_size=8, lr=1e-2, min_lr=1e-3, warmup=2, eval_every=3)
fit(model, _make(x, ys), len(x), lambda m: {{"command_acceptance": 0.0}}, cfg, __import__("pathlib").Path({out!r}),
    progress=False)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert torch.equal(gathered[0], gathered[1]), "ranks diverged"
# one file per rank: two ranks printing to one shared pipe can interleave character by character
__import__("pathlib").Path({out!r}, f"rank{{dist.get_rank()}}.ok").write_text(str(float(flat.abs().sum())))
dist.barrier()  # both ranks done before tearing gloo down (a rank leaving early can abort the other's threads)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_on_gloo(tmp_path: Path) -> None:
    script = tmp_path / "ddp_step.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT.format(root=str(ROOT), tests=str(Path(__file__).parent),
                                                         out=str(tmp_path / "run"))))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(script)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sums = [(tmp_path / "run" / f"rank{r}.ok").read_text() for r in range(2)]
    assert sums[0] == sums[1]
    assert (tmp_path / "run" / "last.pt").is_file()


def test_a_batch_moves_to_the_device_whole() -> None:
    from distill.train import _to_device

    b = Batch(inputs=torch.zeros(2, 3), targets=[torch.zeros(2, dtype=torch.long)] * 2,
              teacher_logits=[torch.zeros(2, 4)], ctc_targets=torch.ones(5, dtype=torch.long),
              ctc_target_lengths=torch.tensor([2, 3]), ctc_input_lengths=torch.tensor([9, 9]))
    moved = _to_device(b, torch.device("meta"))  # a device without data: the move itself is what is checked
    tensors = [moved.inputs, *moved.targets, *(moved.teacher_logits or []), moved.ctc_targets,
               moved.ctc_target_lengths, moved.ctc_input_lengths]
    assert all(t is not None and t.device.type == "meta" for t in tensors) and moved.teacher_feats is None
    assert len(moved.targets) == 2 and b.inputs.device.type == "cpu"  # the original batch is untouched


def test_feature_distillation_without_a_projection_compares_features_as_they_are(tmp_path: Path) -> None:
    x, ys = _toy()

    def make_batch(idx: np.ndarray, step: int) -> Batch:
        t = torch.from_numpy(idx)
        return Batch(inputs=x[t], targets=[y[t] for y in ys], teacher_feats=torch.zeros(len(idx), 6, 16))

    cfg = TrainConfig(steps=4, batch_size=16, warmup=1, eval_every=4, gamma=1.0)
    fit(_model(), make_batch, len(x), _accuracy(x, ys), cfg, tmp_path, progress=False)
    row = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "feat" in row[0].split(",")
