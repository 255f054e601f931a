"""The training loop (nanoGPT's shape): a pure ``lr_at(step)``, an ``evaluate()`` that returns
metrics, the seed set once, checkpoints that resume exactly, metrics to CSV.

One loop trains every model here: the teacher's heads on cached encoder frames and the
student on audio, with or without a teacher (α·CE + β·KD + γ·features, see
:mod:`distill.losses`). Batches are drawn from ``(seed, step)`` alone and dropout is
seeded the same way, so a run resumed from a checkpoint takes exactly the steps the
uninterrupted run would have taken. Under ``torchrun`` it runs DistributedDataParallel
(gloo on CPU, nccl on CUDA), each rank taking its share of every batch; CUDA and bf16
autocast are used when present.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from assistant.errors import ConfigError
from distill.losses import total_loss

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 64
    """Global batch (split across DDP ranks)."""
    lr: float = 3e-3
    """Peak learning rate (AdamW)."""
    min_lr: float = 1e-4
    """Floor of the cosine decay."""
    warmup: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    seed: int = 0
    """Seeds batches, dropout and initialization."""
    eval_every: int = 250
    """Validate every this many steps (and at the end)."""
    patience: int = 0
    """Early stopping: stop after this many evaluations without improvement (0: never)."""
    alpha: float = 1.0
    """Weight of hard-label cross-entropy."""
    beta: float = 0.0
    """Weight of output-layer distillation (needs teacher logits)."""
    temperature: float = 2.0
    """Distillation temperature."""
    gamma: float = 0.0
    """Weight of intermediate-feature distillation (needs teacher features)."""
    feature_kind: str = "mse"
    """'mse' or 'cosine'."""
    ctc: float = 0.0
    """Weight of a CTC loss on the transcript (in ``ctc_units``), read from the student's per-step features
    by a linear layer trained with it (0: off). A dense, per-frame signal of *what was said*, on top of the
    utterance-level heads. A phone head is kept with the student (:meth:`Student.attach_ctc`) and exported
    for the grammar decoder when the build's preset has one; a letter head is a training aid only."""
    ctc_units: str = "chars"
    """What the CTC loss spells transcripts in: 'chars' (letters and space) or 'phones' (espeak-ng's
    US English phones, word by word: :mod:`distill.phones`; the lexicon is saved in the checkpoint's
    model config). A phone CTC head can be decoded through the context's grammar
    (:mod:`assistant.grammar`; docs/BENCHMARKS.md, "Phone CTC decoded through the grammar")."""
    teacher_correct: bool = False
    """Where the teacher's top class on a head is not the clip's true label, distil towards the true
    label on that head instead (synthetic clips know their label; the teacher accepts negatives)."""
    time_masks: int = 0
    """SpecAugment on a student's log-mel batches: time masks per clip (0: off)."""
    time_mask_frames: int = 20
    """Widest time mask, in frames."""
    freq_masks: int = 0
    """Mel-band masks per clip (0: off)."""
    freq_mask_bins: int = 8
    """Widest band mask, in mel bins."""
    time_stretch: float = 0.0
    """A student's log-mel clips stretched in time by a factor drawn from [1 - x, 1 + x] (0: off)."""
    freq_warp: float = 0.0
    """A student's log-mel clips warped along the mel axis by a factor from [1 - x, 1 + x] (a
    vocal-tract-length perturbation: another speaker's formants; 0: off)."""
    length_buckets: int = 0
    """Draw each batch from one of this many groups of similar-length examples (the pool sorted by
    length, cut into equal groups; a group drawn in proportion to its size), so a batch is mostly
    real frames rather than padding (0 or 1: any examples, of any length). Measured on the default
    preset at 1,500 steps (docs/BENCHMARKS.md): 16 groups 1.4x faster steps but 12 points lower
    validation intent accuracy; 4 groups 1.3x faster, within seed noise. At 2 threads alone
    neither was faster than unbucketed batches (0.33 vs 0.31 s a step at 6,000 steps)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("train.steps and train.batch_size must be positive")
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"train.min_lr: expected 0 < min_lr <= lr ({self.lr}), got {self.min_lr}")
        if self.feature_kind not in ("mse", "cosine"):
            raise ConfigError(f"train.feature_kind: expected 'mse' or 'cosine', got {self.feature_kind!r}")
        if not (0 <= self.time_stretch < 1 and 0 <= self.freq_warp < 1):
            raise ConfigError("train.time_stretch/freq_warp: expected a fraction in [0, 1)")
        if self.time_stretch and self.gamma:
            raise ConfigError("train.time_stretch with gamma > 0: stretched clips no longer line up in time with "
                              "the teacher's features")
        if self.length_buckets < 0:
            raise ConfigError(f"train.length_buckets: expected >= 0, got {self.length_buckets}")
        if min(self.time_masks, self.time_mask_frames, self.freq_masks, self.freq_mask_bins) < 0:
            raise ConfigError("train.time_masks/time_mask_frames/freq_masks/freq_mask_bins must be >= 0")
        if self.ctc_units not in ("chars", "phones"):
            raise ConfigError(f"train.ctc_units: expected 'chars' or 'phones', got {self.ctc_units!r}")
        if min(self.alpha, self.beta, self.gamma, self.ctc) < 0 or self.temperature <= 0:
            raise ConfigError("train.alpha/beta/gamma/ctc must be >= 0 and temperature > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return cls(**data)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def batch_indices(n: int, step: int, cfg: TrainConfig, rank: int = 0, world: int = 1,
                  lengths: np.ndarray | None = None) -> np.ndarray:
    """The examples of ``step``'s batch for ``rank``: a pure function of (seed, step) and ``lengths``.

    With ``cfg.length_buckets`` > 1 and the examples' ``lengths``, the batch comes from one group of
    similar-length examples (see ``TrainConfig.length_buckets``).
    """
    rng = np.random.default_rng([cfg.seed, step])
    if cfg.length_buckets > 1 and lengths is not None:
        if len(lengths) != n:
            raise ValueError(f"lengths: expected {n} values, got {len(lengths)}")
        groups = np.array_split(np.argsort(lengths, kind="stable"), min(cfg.length_buckets, n))
        group = groups[rng.choice(len(groups), p=np.array([len(g) for g in groups]) / n)]
        idx = group[rng.choice(len(group), size=cfg.batch_size, replace=len(group) < cfg.batch_size)]
    else:
        idx = rng.choice(n, size=cfg.batch_size, replace=n < cfg.batch_size)
    return idx[rank::world]


@dataclass
class Batch:
    inputs: torch.Tensor
    """Model input (audio ``[B, samples]`` or encoder frames ``[B, T, D]``)."""
    targets: list[torch.Tensor]
    """Per head ``[B]`` class indices."""
    teacher_logits: list[torch.Tensor] | None = None
    teacher_feats: torch.Tensor | None = None
    ctc_targets: torch.Tensor | None = None
    """The batch's transcripts as :data:`distill.losses.CTC_ALPHABET` indices, concatenated (``ctc > 0``)."""
    ctc_target_lengths: torch.Tensor | None = None
    """``[B]`` characters per clip."""
    ctc_input_lengths: torch.Tensor | None = None
    """``[B]`` real (unpadded) network steps per clip."""


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of ``batch`` on ``device`` (labels too: the losses compare them with the logits there)."""

    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return Batch(**{f.name: move(getattr(batch, f.name)) for f in fields(batch)})


class _WithFeatures(nn.Module):
    """Calls ``forward_features`` through ``forward``, so DDP's gradient hooks see it.

    Returns the logits, the features projected for feature distillation (None without ``project``)
    and the CTC head's logits ``[B, T, symbols]`` (None without ``ctc_head``).
    """

    def __init__(self, model: nn.Module, project: nn.Module | None, ctc_head: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.project = project
        self.ctc_head = ctc_head

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        logits, feats = self.model.forward_features(x)  # type: ignore[operator]
        projected = self.project(feats) if self.project is not None else None
        return logits, projected, (self.ctc_head(feats) if self.ctc_head is not None else None)


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig, model_config: dict[str, Any], best: dict[str, Any],
                    project: nn.Module | None = None, ctc_head: nn.Module | None = None) -> None:
    """Model weights and config, optimizer, step and training config: enough to rebuild and resume."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "train_config": cfg.to_dict(), "model_config": model_config, "best": best,
                "project": project.state_dict() if project is not None else None,
                "ctc_head": ctc_head.state_dict() if ctc_head is not None else None}, tmp)
    tmp.replace(path)


_SCHEDULE_FREE = ("eval_every", "patience")
"""TrainConfig fields a resumed run may change: they do not change the weights' trajectory."""


def _check_resumable(path: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    """ConfigError when ``path`` was trained with settings this run would not reproduce (a silent mix)."""
    now, default = cfg.to_dict(), TrainConfig().to_dict()
    was = {k: saved.get(k, default[k]) for k in now}  # a checkpoint from before an option existed had its default
    changed = sorted(k for k in now if k not in _SCHEDULE_FREE and was[k] != now[k])
    if changed:
        what = ", ".join(f"{k} {was[k]!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"{path}: cannot resume: this run changes {what}; move the folder aside (or delete it) "
                          f"to train from scratch, or keep the old settings")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (plain tensors and JSON-like data only)."""
    data: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return data


def fit(
    model: nn.Module,
    make_batch: Callable[[np.ndarray, int], Batch],
    n_examples: int,
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    model_config: dict[str, Any] | None = None,
    select: str = "command_acceptance",
    project: nn.Module | None = None,
    ctc_head: nn.Module | None = None,
    lengths: np.ndarray | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` and return the best validation metrics; resumes from ``out_dir/last.pt``.

    ``make_batch(indices, step)`` builds the batch for those examples (it may augment,
    seeded by step). ``evaluate(model)`` returns metrics; ``select`` names the one to
    maximize (best checkpoint: ``best.pt``). ``project`` maps student features to the
    teacher's width for feature distillation and is trained with the model; so is ``ctc_head``, which
    maps per-step features to CTC logits (``cfg.ctc > 0``; the batches then carry transcripts). ``lengths`` (one per
    example) lets ``cfg.length_buckets`` group similar-length examples into a batch.
    """
    rank, world = _distributed()
    device = torch.device("cuda", rank % max(1, torch.cuda.device_count())) if torch.cuda.is_available() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.ctc > 0 and ctc_head is None:
        raise ValueError("train.ctc > 0 needs a ctc_head")
    aux = [m for m in (project, ctc_head) if m is not None]
    params = list(model.parameters()) + [q for m in aux for q in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, {select: -1.0, "step": -1}
    last = out_dir / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last)
        _check_resumable(last, ckpt.get("train_config") or {}, cfg)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if project is not None and ckpt.get("project") is not None:
            project.load_state_dict(ckpt["project"])
        if ctc_head is not None and ckpt.get("ctc_head") is not None:
            ctc_head.load_state_dict(ckpt["ctc_head"])
        start, best = int(ckpt["step"]), dict(ckpt["best"])
        _LOGGER.info("resuming from %s at step %d", last, start)
    if device is not None:
        model.to(device)
        for m in aux:
            m.to(device)
    wrapped = cfg.gamma > 0 or cfg.ctc > 0
    trainable: nn.Module = (_WithFeatures(model, (project or nn.Identity()) if cfg.gamma > 0 else None,
                                          ctc_head if cfg.ctc > 0 else None) if wrapped else model)
    net: nn.Module = nn.parallel.DistributedDataParallel(trainable) if world > 1 else trainable
    log_path = out_dir / "metrics.csv"
    board = _tensorboard(out_dir) if rank == 0 else None
    evals_since_best = 0
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step")
    t0 = time.time()
    step = start
    for step in range(start, cfg.steps):
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        batch = make_batch(batch_indices(n_examples, step, cfg, rank, world, lengths), step)
        if device is not None:
            batch = _to_device(batch, device)
        inputs = batch.inputs
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device is not None):
            if wrapped:
                logits, feats, ctc_logits = net(inputs)
            else:
                logits, feats, ctc_logits = net(inputs), None, None
        loss, parts = total_loss(
            [z.float() for z in logits], batch.targets, batch.teacher_logits, alpha=cfg.alpha, beta=cfg.beta,
            temperature=cfg.temperature, gamma=cfg.gamma, student_feats=feats, teacher_feats=batch.teacher_feats,
            feature_kind=cfg.feature_kind, ctc=cfg.ctc,
            ctc_logits=ctc_logits.float() if ctc_logits is not None else None, ctc_targets=batch.ctc_targets,
            ctc_target_lengths=batch.ctc_target_lengths, ctc_input_lengths=batch.ctc_input_lengths,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{parts['total']:.3f}")
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            if rank == 0:
                metrics = evaluate(model)
                row = {"step": done, "lr": lr_at(step, cfg), "seconds": round(time.time() - t0, 1), **parts, **metrics}
                _append_csv(log_path, row)
                if board is not None:
                    for key, value in row.items():
                        if key != "step" and isinstance(value, (int, float)):
                            board.add_scalar(key, value, done)
                improved = metrics.get(select, -1.0) > best[select]
                if improved:
                    best = {**metrics, "step": done}
                    save_checkpoint(out_dir / "best.pt", model, optimizer, done, cfg, model_config or {}, best, project,
                                    ctc_head)
                evals_since_best = 0 if improved else evals_since_best + 1
                save_checkpoint(last, model, optimizer, done, cfg, model_config or {}, best, project, ctc_head)
                _LOGGER.info("step %d: %s", done, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            stop = torch.tensor([int(bool(cfg.patience) and evals_since_best >= cfg.patience)])
            if world > 1:
                dist.broadcast(stop, src=0)  # every rank stops at the same step
            if stop.item():
                _LOGGER.info("early stop at step %d (best %s=%.4f at step %d)", done, select, best[select], best["step"])
                break
    if bar is not None:
        bar.close()
    if board is not None:
        board.close()
    return best


def _tensorboard(out_dir: Path) -> Any:
    """A SummaryWriter when TensorBoard is installed (optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)

