"""Updating a finished build for a changed context (a lamp added): train only for what changed.

A home's context changes a little at a time, and a from-scratch default build takes 85-110 minutes
on 2 cores (docs/BENCHMARKS.md). ``hubvoice-distill build NEW.yaml --update-from WORK/build-...``
starts from that earlier build instead (:func:`distill.build.build`):

- **Corpus.** The earlier build's clips that the new context still says with the same meaning (a
  command whose sentence it can say and whose intent and slot values it has; a negative it does not
  now accept as a command), plus *delta corpora*: sentences of the new context that the old one
  cannot say (:func:`delta_contexts`), synthesized on the same voices and splits, so test stays on
  held-out voices. Each corpus is a *part*; an update of an update reads its parts through
  ``update.json`` (:func:`corpus_parts`).
- **Teacher and student.** The pool is augmented part by part (:func:`distill.teach.augmented_parts`),
  so the carried clips' augmented copies are the same audio as before and their Whisper frames come
  from the cache. The heads start from the earlier teacher's and student's: every row of a label the
  old context has is copied, a new label's row is new (:func:`grow_state`); the phone CTC head the
  same way by phone. Then both are fine-tuned for :class:`UpdateRecipe`'s steps on the whole pool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from assistant.context import Context
from assistant.context.model import Expression
from assistant.decode import HeadLayout
from assistant.errors import ConfigError, CorpusError
from distill.corpus import Utterance
from distill.data import ClipSet, load_corpus
from distill.negatives import NONSPEECH_KINDS
from distill.train import TrainConfig

UPDATE_FILE = "update.json"
"""In an update's work folder: the folder it was updated from and its delta corpora."""
CONTEXT_FILE = "context.yaml"
"""In every build's work folder: the context it was built for (what a later update compares against)."""


@dataclass(frozen=True)
class UpdateRecipe:
    """How much an update synthesizes and trains (the rest of the recipe is the preset's).

    The default's, measured with a lamp added to the default model on 2 cores: 27.6 min against 110 from
    empty; the earlier commands within 0.8 point of the model it started from, the new lamp's commands
    59.4 / 42.8 / 33.3% right clean / 15 / 6 dB (docs/BENCHMARKS.md, "A lamp added"). Not tuned."""

    utterances: int = 1500
    """Delta corpus size (negatives included), shared between the delta contexts."""
    teacher_steps: int = 500
    student_steps: int = 1500
    lr_scale: float = 0.5
    """Both learning rates are the preset's times this: the networks start trained."""
    warmup: int = 50

    def train(self, cfg: TrainConfig, steps: int) -> TrainConfig:
        """The preset's training config ``cfg`` for a fine-tune of ``steps`` steps."""
        return replace(cfg, steps=steps, lr=cfg.lr * self.lr_scale, min_lr=min(cfg.min_lr, cfg.lr * self.lr_scale),
                       warmup=min(self.warmup, steps // 4), eval_every=max(1, min(cfg.eval_every, steps // 2)))


def _values(ctx: Context, name: str) -> set[tuple[str, str]]:
    st = ctx.slots.get(name)
    return set() if st is None else {(v.spoken, v.value) for v in st.values}


def delta_contexts(old: Context, new: Context) -> list[Context]:
    """Contexts whose sentences are (mostly) ones ``new`` says and ``old`` cannot: at most two.

    1. The expressions ``new`` has and ``old`` has not (new intents, new or reworded expressions),
       with every slot value.
    2. ``new``'s other expressions that reach a slot type with new spoken values, those types cut
       down to their new values (so a sentence through such a slot says a new value).

    Sentences of these that ``old`` can say still come out (an optional slot left out); the caller
    drops them with a :class:`CommandChecker` of ``old``. Empty when nothing was added.
    """
    fresh = {name: tuple(v for v in st.values if (v.spoken, v.value) not in _values(old, name))
             for name, st in new.slots.items()}
    fresh = {name: values for name, values in fresh.items() if values}
    added: dict[str, tuple[Expression, ...]] = {}
    reaching: dict[str, tuple[Expression, ...]] = {}
    for intent, expressions in new.expressions.items():
        before = {(e.text, e.fixed_slots) for e in old.expressions.get(intent, ())}
        added[intent] = tuple(e for e in expressions if (e.text, e.fixed_slots) not in before)
        reaching[intent] = tuple(e for e in expressions if (e.text, e.fixed_slots) in before
                                 and any(s.type in fresh for s in new.iter_slots(e.node)))
    out = []
    if any(added.values()):
        out.append(Context({i: e for i, e in added.items() if e}, new.slots, new.macros, file=f"{new.file} (added)"))
    if any(reaching.values()):
        slots = {name: (replace(st, values=fresh[name], range=None) if name in fresh else st)
                 for name, st in new.slots.items()}
        out.append(Context({i: e for i, e in reaching.items() if e}, slots, new.macros,
                           file=f"{new.file} (new values)"))
    return out


def keeper(layout: HeadLayout, says: Callable[[str], bool],
           old_says: Callable[[str], bool] | None = None) -> Callable[[Utterance], bool]:
    """Which utterances of a part a context with ``layout`` keeps.

    ``says`` tells whether that context can say a sentence (a :class:`CommandChecker`): a command is
    kept if it can and its intent and slot values are labels of ``layout``; a spoken negative if it
    cannot (a negative that is now a command is dropped); noise and silence always. With ``old_says``
    (a delta part) a command the old context could already say is dropped too.
    """
    heads = dict(layout.slots)

    def keep(u: Utterance) -> bool:
        if u.kind in NONSPEECH_KINDS:
            return True
        if u.kind != "command" or u.intent is None:
            return not says(u.text)
        if u.intent not in layout.intents or not says(u.text) or (old_says is not None and old_says(u.text)):
            return False
        allowed = layout.intent_slots.get(u.intent, frozenset())
        return all(name in heads and value in heads[name] and (name in allowed or not allowed)
                   for name, value in u.slots.items())

    return keep


def write_update(root: Path, source: Path, deltas: Sequence[str]) -> None:
    (root / UPDATE_FILE).write_text(json.dumps({"from": str(source.resolve()), "delta": list(deltas)}, indent=2))


def corpus_parts(root: Path) -> list[Path]:
    """The corpus folder of every part of the build in ``root``, oldest first."""
    info = root / UPDATE_FILE
    if not info.is_file():
        return [root / "corpus"]
    data = json.loads(info.read_text())
    return [*corpus_parts(Path(data["from"])), *(root / d for d in data["delta"])]


def load_parts(parts: Sequence[Path], layout: HeadLayout, split: str, keep: Callable[[Utterance], bool],
               mine: Mapping[Path, Callable[[Utterance], bool]]) -> list[tuple[Path, ClipSet]]:
    """(part, its clips) for each part with clips of ``split`` left after its filter: ``mine``'s for the parts
    this update synthesized (its delta corpora), ``keep`` for the others."""
    out = []
    for folder in parts:
        try:
            out.append((folder, load_corpus(folder, layout, splits=(split,), where=mine.get(folder, keep))))
        except CorpusError:  # no clip of this split in this part
            continue
    return out


def joined(sets: Sequence[ClipSet], what: str) -> ClipSet:
    if not sets:
        raise CorpusError(f"update: no {what} clips in any part")
    out = sets[0]
    for s in sets[1:]:
        out = out.join(s)
    return out


def head_labels(layout: HeadLayout) -> list[tuple[str, tuple[str, ...]]]:
    """(head name, labels) per head of ``layout``, the intent head first (named ``"<intent>"``)."""
    return [("<intent>", layout.intents), *layout.slots]


def copy_rows(fresh: torch.Tensor, old: torch.Tensor, new_labels: Sequence[str],
              old_labels: Sequence[str]) -> torch.Tensor:
    """``fresh`` with each row whose label ``old_labels`` has taken from ``old``."""
    out = fresh.clone()
    where = {label: i for i, label in enumerate(old_labels)}
    for i, label in enumerate(new_labels):
        if label in where:
            out[i] = old[where[label]]
    return out


_HEAD = re.compile(r"heads\.(\d+)\.(weight|bias)")


def grow_state(old: Mapping[str, torch.Tensor], fresh: Mapping[str, torch.Tensor], old_layout: HeadLayout,
               new_layout: HeadLayout, prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict for a network of ``new_layout`` from ``old``'s, trained for ``old_layout``.

    ``fresh`` is the new network's own (initialized) state dict. Output heads (``heads.N.*``) and the
    per-head attention (``attention.*``, one row per head) are matched by head name and label: a row
    ``old`` has is copied, a new head's or label's row stays ``fresh``'s. Every other tensor is
    ``old``'s and must have the same shape (the same network otherwise).
    """
    old_heads, new_heads = head_labels(old_layout), head_labels(new_layout)
    old_index = {name: i for i, (name, _) in enumerate(old_heads)}
    out: dict[str, torch.Tensor] = {}
    for key, value in fresh.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        head = _HEAD.fullmatch(name)
        if head:
            hname, labels = new_heads[int(head[1])]
            j = old_index.get(hname)
            out[key] = value.clone() if j is None else copy_rows(
                value, old[f"{prefix}heads.{j}.{head[2]}"], labels, old_heads[j][1])
        elif name in ("attention.weight", "attention.bias"):
            out[key] = copy_rows(value, old[key], [n for n, _ in new_heads], [n for n, _ in old_heads])
        elif key not in old or old[key].shape != value.shape:
            raise ConfigError(f"update: the earlier model's {key} is {tuple(old[key].shape) if key in old else 'missing'}"
                              f", this recipe's is {tuple(value.shape)}: not the same network (another preset?)")
        else:
            out[key] = old[key].clone()
    return out


def grow_ctc(old: Mapping[str, torch.Tensor], fresh: Mapping[str, torch.Tensor], old_units: Sequence[str],
             new_units: Sequence[str]) -> dict[str, torch.Tensor]:
    """A phone CTC head's state for ``new_units`` from one trained on ``old_units`` (blank is class 0)."""
    old_labels, new_labels = ["<blank>", *old_units], ["<blank>", *new_units]
    return {k: copy_rows(v, old[k], new_labels, old_labels) for k, v in fresh.items()}


def previous(root: Path, name: str) -> dict[str, Any]:
    """The checkpoint ``name`` (e.g. ``teacher/best.pt``) of the earlier build in ``root``."""
    from distill.train import load_checkpoint

    path = root / name
    if not path.is_file():
        raise ConfigError(f"update: {path} not found: --update-from needs a finished build's work folder")
    return load_checkpoint(path)


def check_source(root: Path) -> Path:
    """``root``'s context file, or a ConfigError saying what is missing."""
    if not root.is_dir():
        raise ConfigError(f"update: {root}: no such build work folder")
    ctx = root / CONTEXT_FILE
    if not ctx.is_file():
        raise ConfigError(f"update: {ctx} not found (builds before 2026-12-08 did not keep their context): "
                          f"copy the context the build was made from there (its bundle's context.yaml)")
    return ctx
