"""`hubvoice-distill build`: the whole pipeline, context → verified bundle, resumable.

Stages (each timed; each leaves its result under ``work/<name>/`` so a re-run skips or
resumes it): **synth** (content-addressed audio: a re-run reuses every clip) →
**teacher** (frozen Whisper encoder, frames cached per clip; heads resume from their
checkpoint) → **student** (distilled; resumes from ``last.pt``) → **calibrate** (the
rejection threshold on validation data for a target false-accept rate on the negative kinds
the preset counts and a target wrong-action rate, the student's and, the same way, the teacher's) → **evaluate** (held-out voices clean, 15 dB and 6 dB; teacher and
student side by side, the teacher with and without its threshold) → **export**
(int8 ONNX bundle with samples from held-out voices, self-tested, and its model card).

``--update-from`` (a changed context, e.g. a lamp added): synth makes only the sentences the earlier
context cannot say and carries the earlier build's clips; teacher and student start from its networks
and are fine-tuned (:mod:`distill.update`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.context import Context, load_context
from assistant.decode import Decision, HeadLayout
from assistant.errors import ConfigError
from assistant.grammar import SEARCH_ENGINE, GrammarGraph, GrammarSettings, Lexicon, Scorer
from distill import decoding, update
from distill.corpus import SPLITS
from distill.data import ClipSet, load_corpus, load_fsdd, with_noise
from distill.distillation import StudentRecipe, student_probs, train_student
from distill.evaluate import (
    Metrics,
    calibrate_threshold,
    check_far_kinds,
    decide_all,
    format_table,
    score,
    wrong_action_rate,
)
from distill.export import QUANTIZE_MODES
from distill.negatives import CommandChecker
from distill.nets.profile import count_parameters, macs_per_second, whisper_encoder_cost
from distill.nets.student import StudentConfig
from distill.phones import make_lexicon, phonemize
from distill.synth import SynthConfig, synthesize_corpus
from distill.teach import TeacherConfig, augmented_parts, train_teacher
from distill.teachers.neural import CacheUse, cache_use
from distill.train import TrainConfig
from distill.update import UpdateRecipe

_LOGGER = logging.getLogger(__name__)

CALIBRATION_CLIPS = 256
"""Training clips that calibrate the int8 activation ranges. Measured on the default model (test clean,
through ONNX Runtime): 64 clips cost 1.0 point against fp32, 256 clips 0.2 (docs/BENCHMARKS.md)."""


@dataclass(frozen=True)
class Preset:
    utterances: int
    """Corpus size (negatives included)."""
    teacher: TeacherConfig
    student: StudentRecipe
    target_far: float = 0.02
    """False-accept rate on validation negatives the rejection threshold is chosen for."""
    target_wrong: float | None = None
    """If set, the threshold also keeps wrong actions (validation commands accepted with a wrong intent
    or slot) at most this share: :func:`distill.evaluate.calibrate_threshold`. None: not bounded."""
    far_kinds: tuple[str, ...] | None = None
    """The negative kinds ``target_far`` counts (e.g. out_of_domain, noise, silence: leave the near misses,
    which sound like commands, to the wrong-action target or to none). None: every kind."""
    decoder: GrammarSettings | None = None
    """Decode the student's phone CTC head through the context's grammar (the student must train one:
    ``train.ctc > 0``, ``ctc_units`` 'phones'); its threshold and the heads' gate are calibrated for the
    same targets (:func:`distill.decoding.calibrate_gated`; needs ``target_wrong``). None: the heads decide."""
    scorer: bool = False
    """With a ``decoder``: fit a :class:`assistant.grammar.Scorer` on the calibration clips (the same ones the
    thresholds are set on) and set one threshold on its probability that the sentence is right, instead of the
    decoder's confidence and the heads' gate. Measured on the default model: 62.4 / 51.7 / 35.0% of test commands
    right (clean / 15 / 6 dB) against 51.6 / 44.4 / 28.8% with the two thresholds, at the same targets, but more
    near misses accepted (docs/BENCHMARKS.md, "One score for the grammar's sentence")."""
    quantize: str = "weights"
    """How the bundle's ``model.onnx`` is made int8 (:func:`distill.export.quantize_model`). 'weights': int8
    weights, float activations and arithmetic: smaller than 'static', and no int8 kernel runs, so the CPU does
    not change its decisions. On the shipped student it decided 98.9% of test clips as fp32 does, 'static' 95.5%
    (docs/BENCHMARKS.md, "int8 that decides like fp32 on every CPU")."""
    update: UpdateRecipe = field(default_factory=UpdateRecipe)
    """What ``build --update-from`` synthesizes and trains on top of an earlier build (:mod:`distill.update`)."""
    calibrate_snr: tuple[float, ...] = ()
    """Also set the thresholds (student's and teacher's) on the validation clips with noise at these SNRs
    (dB; :func:`distill.data.with_noise`), together with the clean ones as one set: the targets then hold
    in noise too, not only in quiet. Empty: clean validation only."""


def calibration_clips(train: ClipSet, n: int, seed: int) -> list[np.ndarray]:
    """The ``n`` training clips (all, if fewer) a build of ``seed`` calibrates static int8 on and checks int8
    against fp32 on: drawn without replacement by ``seed``."""
    picked = np.random.default_rng(seed).choice(len(train), min(n, len(train)), False)
    return [train.audio[i] for i in picked]


OTHER_NEGATIVES = ("out_of_domain", "noise", "silence")
"""The presets' :attr:`Preset.far_kinds`: speech and sound that is not meant for the hub. The near misses
(sentences of the context's own words that are not commands) are bounded through the wrong actions instead:
with them in the false-accept target, the threshold of the default model was set by the two or three most
confident of its 44 validation near misses, and the teacher carried out 14% of the commands
(docs/BENCHMARKS.md, "Operating points")."""

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        utterances=1500,
        teacher=TeacherConfig(window_s=4.0, copies=0, train=TrainConfig(steps=300, batch_size=64, lr=2e-3,
                                                                          warmup=30, eval_every=150)),
        student=StudentRecipe(student=StudentConfig(channels=32, dilations=(1, 2, 4, 8, 1, 2)),
                              train=TrainConfig(steps=400, batch_size=32, lr=3e-3, warmup=40, eval_every=200,
                                                alpha=0.5, beta=1.0, gamma=1.0),
                              copies=0, max_seconds=5.0),
        far_kinds=OTHER_NEGATIVES, target_wrong=0.05,
        update=UpdateRecipe(utterances=300, teacher_steps=100, student_steps=150, warmup=10),
    ),
    "default": Preset(
        utterances=10000,
        teacher=TeacherConfig(window_s=5.0, copies=1, train=TrainConfig(steps=2000, batch_size=64, lr=2e-3,
                                                                          warmup=100, eval_every=250)),
        student=StudentRecipe(student=StudentConfig(channels=96),
                              train=TrainConfig(steps=8000, batch_size=64, lr=3e-3, warmup=150, eval_every=500,
                                                alpha=0.5, beta=1.0, gamma=0.0, time_masks=2, time_mask_frames=12,
                                                freq_masks=2, freq_mask_bins=6, time_stretch=0.1, freq_warp=0.1,
                                                ctc=5.0, ctc_units="phones"),
                              copies=1, max_seconds=5.0),
        far_kinds=OTHER_NEGATIVES, target_wrong=0.05,
        # measured on validation (docs/BENCHMARKS.md, "Phone CTC decoded through the grammar"): blank penalty 2
        # beat 3 and 4; the heads' log-probability at weight 0.5 helps choose among the decoder's sentences.
        # Beam 200 and prune 10: at the calibrated thresholds every beam of 50-1000 and prune of 10-25 put the
        # same share of val commands right within 2 points (clean, 15 and 6 dB), and this one searches in
        # p50 0.16 ms (beam 300, prune 25: 1.0 ms); docs/BENCHMARKS.md, "The search, compiled"
        decoder=GrammarSettings(blank_penalty=2.0, heads_weight=0.5, beam=200, prune=10.0),
        # wrong actions at 6 dB were 9.5% with thresholds set on clean val alone (the target is 5%)
        calibrate_snr=(15.0, 6.0), scorer=True,
    ),
    "large": Preset(
        utterances=60000,
        teacher=TeacherConfig(window_s=5.0, copies=2, train=TrainConfig(steps=4000, batch_size=128, lr=2e-3,
                                                                          warmup=200, eval_every=500)),
        student=StudentRecipe(student=StudentConfig(channels=128),
                              train=TrainConfig(steps=8000, batch_size=128, lr=3e-3, warmup=300, eval_every=1000,
                                                alpha=0.5, beta=1.0, gamma=0.0, ctc=5.0, ctc_units="phones"),
                              copies=2, max_seconds=5.0),
        far_kinds=OTHER_NEGATIVES, target_wrong=0.05,
        decoder=GrammarSettings(blank_penalty=2.0, heads_weight=0.5, beam=200, prune=10.0),
        calibrate_snr=(15.0, 6.0), scorer=True,
    ),
}


def extra_negatives(context: str | Path | Context, corpus: Path, folder: Path, n: int, seed: int,
                    layout: HeadLayout) -> tuple[ClipSet, ClipSet]:
    """More held-out negatives: the val and test negatives of a second, negatives-only corpus.

    About ``n`` negatives (plan seed ``seed``) are synthesized into ``folder`` on the held-out voices
    of val and test (a spoken sentence in one split only); spoken clips whose sentence ``corpus``
    has in any split are dropped, so nothing heard in training or in the other split returns.
    A threshold for a 2% false-accept rate on a build's ~135 validation negatives sits at the
    third most confident one; with ~6x more it is measured (docs/BENCHMARKS.md).
    """
    from distill.corpus import Utterance, read_manifest
    from distill.negatives import NONSPEECH_KINDS
    from distill.synth import SplitConfig

    said = {u.text for u in read_manifest(corpus) if u.text}
    cfg = SynthConfig(utterances=n, negatives=0.999, seed=seed, splits=SplitConfig(fractions=(0.0, 0.5, 0.5)))
    synthesize_corpus(context, folder, cfg, progress=False)

    def keep(u: Utterance) -> bool:
        return u.kind != "command" and (u.kind in NONSPEECH_KINDS or u.text not in said)

    return (load_corpus(folder, layout, splits=("val",), where=keep),
            load_corpus(folder, layout, splits=("test",), where=keep))


def train_near_misses(context: str | Path | Context, build_dir: Path, folder: Path, n: int,
                      layout: HeadLayout, seed: int = 2) -> ClipSet:
    """About ``n`` more near misses on training voices (plan seed ``seed``), for benchmarks that train on
    more of them: none has a sentence that ``build_dir``'s val or test split, or any
    ``build_dir/extra-negatives-*`` corpus (:func:`extra_negatives`), has."""
    from distill.corpus import read_manifest
    from distill.negatives import NegativeConfig
    from distill.synth import SplitConfig

    avoid = {u.text for u in read_manifest(build_dir / "corpus") if u.split != "train"}
    for extra in sorted(build_dir.glob("extra-negatives-*")):
        avoid |= {u.text for u in read_manifest(extra)}
    cfg = SynthConfig(utterances=n, negatives=0.999, seed=seed, splits=SplitConfig(fractions=(1.0, 0.0, 0.0)),
                      negative_config=NegativeConfig(weights=(("near_miss", 1.0),)))
    synthesize_corpus(context, folder, cfg, progress=False)
    return load_corpus(folder, layout, splits=("train",), where=lambda u: u.kind == "near_miss" and u.text not in avoid)


def peak_rss_mb() -> float:
    """The highest resident memory of this process so far, MiB (``ru_maxrss``; Linux counts it in KiB).

    Not :func:`distill.bench._rss_kib` (``VmHWM``): that one avoids counting an exec'ing parent,
    which a build has not, and in a CI run it read lower at a later stage than at an earlier one
    (2026-12-06); per-stage peaks must never fall.
    """
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@dataclass
class BuildReport:
    stages_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    """The process's peak RSS so far at the end of each stage: the stage where it rises set the peak."""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)
    """Per stage, what it took from the work folder instead of making it (:func:`reuse_note`)."""
    decode_s: list[float] = field(default_factory=list)
    """The grammar decoder's search time per clip (presets with a ``decoder``)."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        _LOGGER.info("== %s ==", name)
        t0 = time.time()
        try:
            yield
        finally:
            self.stages_s[name] = round(time.time() - t0, 1)
            self.peak_rss_mb[name] = peak_rss_mb()
            _LOGGER.info("%s took %.1f s (peak RSS so far %.0f MiB)", name, self.stages_s[name],
                         self.peak_rss_mb[name])


def threshold_note(p: Preset, threshold: float, teacher_threshold: float, gate: float | None = None,
                   scored: bool = False) -> str:
    """The card's sentence on what the thresholds were set for and what the FAR columns count."""
    kinds = "all" if p.far_kinds is None else ", ".join(p.far_kinds)
    wrong = "" if p.target_wrong is None else (f" and at most {p.target_wrong:.0%} of the validation commands "
                                               f"accepted with a wrong intent or slot")
    student = (f"student {threshold:.4f}" if gate is None else
               f"student: the scorer's probability that the grammar's sentence is right {threshold:.4f}" if scored else
               f"student: grammar decoder's confidence {threshold:.4f} and heads' gate {gate:.4f}")
    where = "validation" if not p.calibrate_snr else (
        "validation, clean and with noise at " + " and ".join(f"{snr:g}" for snr in p.calibrate_snr)
        + " dB SNR together,")
    return (f"Thresholds ({student}, teacher {teacher_threshold:.4f}) set on {where} for at most "
            f"{p.target_far:.0%} false accepts of the negatives of kinds {kinds}{wrong}. *FAR* counts every "
            f"negative, near misses included; *commands right* counts the commands alone (intent and every slot "
            f"right, accepted). Acceptance also counts each rejected negative as right.")


def decode_note(seconds: Sequence[float]) -> str:
    """The card's sentence on the grammar decoder's search time in this build (empty without one)."""
    if not seconds:
        return ""
    ms = np.asarray(seconds) * 1000.0
    return (f"\n\nThe grammar decoder's search took p50 {np.median(ms):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms "
            f"per clip in this build ({len(ms):,} clips, {SEARCH_ENGINE} search, one process per core, on the build "
            f"machine; on top of the network's run).")


def _percentiles(seconds: Sequence[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    ms = np.asarray(seconds) * 1000.0
    return {"p50": round(float(np.median(ms)), 1), "p95": round(float(np.percentile(ms, 95)), 1), "clips": len(ms)}


def _joined(probs: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
    """Per head, the probability rows of several clip sets one after the other (in ``probs``' order)."""
    return [np.concatenate([p[h] for p in probs.values()]) for h in range(len(next(iter(probs.values()))))]


def _summary(m: Metrics) -> dict[str, Any]:
    return {"command_acceptance": m.command_acceptance, "commands_right": m.commands_right,
            "intent_accuracy": m.intent_accuracy,
            "false_accept_rate": m.false_accept_rate, "false_reject_rate": m.false_reject_rate, "n": m.n}


def _pick_samples(test: ClipSet, decisions: Sequence[Decision], threshold: float,
                  per_intent: int = 1, negatives: int = 1) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Clips from held-out voices the student gets right: one per intent and a negative.

    Per intent the clip that says the most slots is chosen (ties: the shorter), so the samples (and the
    demo) show what the model can do; the negative is the shortest out-of-domain sentence. Clips
    decided with a confidence a quarter of the way from the threshold to 1 come before all others:
    the bundle keeps only the samples its int8 model decides the same way, and a command right at the
    threshold of a strict calibration can fall below it after quantization.
    """
    from distill.evaluate import is_correct

    margin = min(1.0, threshold + 0.25 * (1.0 - threshold))
    chosen: list[tuple[np.ndarray, dict[str, Any]]] = []
    seen: dict[str | None, int] = {}
    order = sorted(range(len(test)), key=lambda i: (decisions[i].confidence < margin, -len(test.references[i].slots),
                                                    len(test.audio[i])))
    for i in order:
        ref, d = test.references[i], decisions[i]
        limit = negatives if ref.intent is None else per_intent
        if not is_correct(ref, d) or seen.get(ref.intent, 0) >= limit or (ref.intent is None and ref.kind != "out_of_domain"):
            continue
        seen[ref.intent] = seen.get(ref.intent, 0) + 1
        chosen.append((test.audio[i], {"understood": d.understood, "intent": d.intent, "slots": d.slots}))
    return chosen


def stage_table(stages_s: dict[str, float], peak_rss_mb: dict[str, float | None],
                found: dict[str, str] | None = None) -> str:
    """Seconds, peak RSS so far (MiB) and what was reused, per stage, as a markdown table.

    The RSS column is left out without RSS, the reuse column without ``found``.
    """
    rss, reuse = "peak RSS so far (MiB)", "from the work folder"
    return format_table([{"stage": k, "seconds": v, rss: peak_rss_mb.get(k), reuse: (found or {}).get(k, "")}
                         for k, v in stages_s.items()],
                        ["stage", "seconds", *([rss] if peak_rss_mb else []), *([reuse] if found else [])])


def _reached(checkpoint: Path) -> int | None:
    """The step a training run's ``last.pt`` reached; None when there is none."""
    from distill.train import load_checkpoint

    return int(load_checkpoint(checkpoint)["step"]) if checkpoint.is_file() else None


def _encoded(use: CacheUse, before: tuple[int, int]) -> str:
    """What the teacher encodings since ``before`` (``use``'s counts of found and encoded files) took from the cache."""
    found, encoded = len(use.found) - before[0], len(use.encoded) - before[1]
    return f"{found:,} of {found + encoded:,} encodings"


def _resumed(what: str, step: int | None, steps: int, source: Path | None = None) -> str:
    """How a training stage started: from scratch, from an earlier build's (an update), or resumed."""
    if step is not None:
        return f"{what} resumed at step {step:,} of {steps:,}"
    return f"{what} from scratch" if source is None else f"{what} from {source}'s, fine-tuned {steps:,} steps"


def reuse_note(from_scratch: bool) -> str:
    """The card's sentence on whether its stage times are from-scratch times."""
    if from_scratch:
        return "This run started from an empty work folder: these are from-scratch times."
    return ("This run reused what its work folder held (last column), so these are **not** from-scratch times; "
            "only a run in an empty work folder gives those (docs/BENCHMARKS.md).")


def build_section(context_path: str | Path, out: Path, preset: str, seed: int, utterances: int | None,
                  stages_s: dict[str, float], target_wrong: float | None = None,
                  peak_rss_mb: dict[str, float] | None = None, far_kinds: Sequence[str] | None = None,
                  calibration_negatives: int = 0, found: dict[str, str] | None = None,
                  from_scratch: bool | None = None, update_from: str | Path | None = None) -> str:
    """The model card's "Build" section: the command that rebuilds the bundle, the machine, time per stage.

    ``found`` (per stage, what was taken from the work folder) and ``from_scratch`` say whether the
    times are from-scratch times; without them the card says only that a run may have reused some.
    """
    command = f"hubvoice-distill build {context_path} -o {out} --preset {preset} --seed {seed}"
    if utterances:
        command += f" --utterances {utterances}"
    if target_wrong is not None and preset != "custom" and target_wrong != PRESETS[preset].target_wrong:
        command += f" --target-wrong-actions {target_wrong:g}"
    if far_kinds is not None and preset != "custom" and tuple(far_kinds) != PRESETS[preset].far_kinds:
        command += f" --far-kinds {','.join(far_kinds)}"
    if calibration_negatives:
        command += f" --calibration-negatives {calibration_negatives}"
    if update_from is not None:
        command += f" --update-from {update_from}"
    if preset == "custom":
        command += "  # a custom Preset object (see recipe above), not a named preset"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, no GPU" \
        if not torch.cuda.is_available() else f"{platform.machine()}, GPU {torch.cuda.get_device_name(0)}"
    rss = peak_rss_mb or {}
    table = stage_table({**stages_s, "total (until export)": round(sum(stages_s.values()), 1)},
                        {**rss, "total (until export)": max(rss.values())} if rss else {}, found)
    reuse = ("A run reuses what its work folder already holds (synthesized clips, teacher encodings, finished "
             "checkpoints), so only a run in an empty work folder shows the from-scratch time (docs/BENCHMARKS.md)."
             if from_scratch is None else reuse_note(from_scratch))
    how = (f"Rebuild from scratch (seed {seed}) with" if update_from is None else
           f"Made as an update of the build in {update_from} (its corpus, teacher and student; seed {seed}) with")
    if update_from is not None:
        reuse = ("These are the times of an update: it synthesized and trained only for what changed, and took the "
                 "rest from the earlier build (last column).")
    return (f"{how}\n\n    {command}\n\nThe time of the `build` run that wrote this "
            f"bundle, on {machine}. {reuse}\n\n{table}")


def build(context_path: str | Path, out_dir: str | Path, *, preset: str | Preset = "default", work: str | Path = "work",
          seed: int = 0, real: str | Path | None = None, whisper_dir: str | None = None,
          utterances: int | None = None, overwrite: bool = False, progress: bool = True,
          target_wrong: float | None = None, calibration_negatives: int = 0,
          far_kinds: Sequence[str] | None = None, update_from: str | Path | None = None) -> Path:
    """Run the whole pipeline; returns the bundle folder. See the module docstring.

    ``update_from``: the work folder of an earlier finished build (of an earlier version of the
    context, same preset): synthesize and train only for what changed (:mod:`distill.update`). Its
    work goes to ``work/update-<out name>-<preset>-s<seed>-<context sha256[:8]>``; ``utterances`` is then the
    size of its delta corpora (:attr:`UpdateRecipe.utterances`).

    ``target_wrong`` and ``far_kinds`` override the preset's :attr:`Preset.target_wrong` and
    :attr:`Preset.far_kinds`. ``calibration_negatives``:
    synthesize about that many more negatives for val (calibration) and test (:func:`extra_negatives`).
    """
    from distill.bundle import write_bundle

    if isinstance(preset, str) and preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    p = PRESETS[preset] if isinstance(preset, str) else preset
    preset_name = preset if isinstance(preset, str) else "custom"
    if target_wrong is not None:
        p = replace(p, target_wrong=target_wrong)
    if far_kinds is not None:
        p = replace(p, far_kinds=tuple(far_kinds))
    try:
        check_far_kinds(p.far_kinds)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if p.quantize not in QUANTIZE_MODES:
        raise ConfigError(f"preset.quantize: expected one of {', '.join(QUANTIZE_MODES)}, got {p.quantize!r}")
    if calibration_negatives < 0:
        raise ConfigError(f"calibration_negatives: expected a count >= 0, got {calibration_negatives}")
    if calibration_negatives and update_from is not None:
        raise ConfigError("calibration_negatives: not available with update_from (an update carries the earlier "
                          "build's negatives and synthesizes its own)")
    if p.target_wrong is not None and not 0.0 <= p.target_wrong <= 1.0:
        raise ConfigError(f"target_wrong: expected a rate in [0, 1], got {p.target_wrong}")
    if p.decoder is not None and (p.target_wrong is None or p.student.train.ctc <= 0
                                  or p.student.train.ctc_units != "phones"):
        raise ConfigError("preset.decoder: the grammar decoder needs a phone CTC head (student train.ctc > 0, "
                          "ctc_units 'phones') and a target_wrong to calibrate for")
    ctx = load_context(context_path)  # a malformed context fails here, before any work
    if p.student.train.ctc > 0 and p.student.train.ctc_units == "phones":
        phonemize("on")  # no espeak-ng to spell the phones: fail now, not after the teacher's training
    layout = HeadLayout.from_context(ctx)
    out = Path(out_dir)
    source = Path(update_from) if update_from is not None else None
    old_ctx = None
    if source is not None:
        old_ctx = load_context(update.check_source(source))
        old_teacher = update.previous(source, "teacher/best.pt")
        old_student = update.previous(source, f"student/{p.student.checkpoint}.pt")
        if json.dumps(old_student["model_config"].get("student"), sort_keys=True) != json.dumps(
                p.student.student.to_dict(), sort_keys=True):
            raise ConfigError(f"update: the student in {source} is not the {preset_name} preset's network: "
                              "update with the preset the earlier build used")
        root = Path(work) / f"update-{out.name}-{preset_name}-s{seed}-{ctx.sha256[:8]}"
    else:
        root = Path(work) / f"build-{out.name}-{preset_name}-s{seed}"
    root.mkdir(parents=True, exist_ok=True)
    # what a later update of this build compares its context against
    (root / update.CONTEXT_FILE).write_bytes(Path(context_path).read_bytes())
    report = BuildReport()
    started = time.time()

    audio_dir = root / "corpus" / "audio"
    had_clips = {p.stem for p in audio_dir.glob("*.wav")} if audio_dir.is_dir() else set()  # audio/<id>.wav
    had_teacher, had_student = _reached(root / "teacher" / "last.pt"), _reached(root / "student" / "last.pt")
    train_parts: list[ClipSet] = []
    new_test: ClipSet | None = None
    with report.stage("synth"):
        if old_ctx is None:
            synthesize_corpus(ctx, root / "corpus", SynthConfig(utterances=utterances or p.utterances, seed=seed),
                              progress=progress)
            train = load_corpus(root / "corpus", layout, splits=("train",))
            val = load_corpus(root / "corpus", layout, splits=("val",))
            test = load_corpus(root / "corpus", layout, splits=("test",))
            planned = [k for clips in (train, val, test) for k in clips.keys]
            reused_clips = sum(k in had_clips for k in planned)
            report.found["synth"] = f"{reused_clips:,} of {len(planned):,} corpus clips"
        else:
            assert source is not None
            deltas = update.delta_contexts(old_ctx, ctx)
            names = [f"delta-{i}" for i in range(len(deltas))]
            n = max(1, (utterances or p.update.utterances) // max(1, len(deltas)))
            for delta, name in zip(deltas, names, strict=True):
                synthesize_corpus(delta, root / name, SynthConfig(utterances=n, seed=seed), progress=progress)
            update.write_update(root, source, names)
            says, old_says = CommandChecker(ctx), CommandChecker(old_ctx)
            keep = update.keeper(layout, says)
            mine = {root / name: update.keeper(layout, says, old_says) for name in names}
            parts = update.corpus_parts(root)
            split_parts = {split: update.load_parts(parts, layout, split, keep, mine) for split in SPLITS}
            train_parts = [clips for _, clips in split_parts["train"]]
            train, val, test = (update.joined([c for _, c in split_parts[split]], split) for split in SPLITS)
            fresh = [clips for folder, clips in split_parts["test"] if folder in mine]
            new_test = update.joined(fresh, "new test") if fresh else None
            reused_clips = sum(len(c) for split in SPLITS for folder, c in split_parts[split] if folder not in mine)
            report.found["synth"] = (f"{reused_clips:,} clips carried from {source}; delta corpora "
                                     + ", ".join(f"{name} ({n:,} planned)" for name in names))
            _LOGGER.info("update: training clips per part %s", ", ".join(f"{len(c):,}" for c in train_parts))
        fit_val = val  # what training validates and selects checkpoints on: the corpus's own split
        if calibration_negatives > 0:
            x_val, x_test = extra_negatives(ctx, root / "corpus", root / f"extra-negatives-n{calibration_negatives}",
                                            calibration_negatives, seed + 1, layout)
            val, test = val.join(x_val), test.join(x_test)  # what the threshold is set on and scored on
            _LOGGER.info("%d + %d more negatives for val and test", len(x_val), len(x_test))
    conditions = {"test clean": test, "test 15 dB": with_noise(test, 15), "test 6 dB": with_noise(test, 6)}
    if new_test is not None:  # an update: its own test clips alone, the sentences the earlier context could not say
        conditions.update({"new test clean": new_test, "new test 15 dB": with_noise(new_test, 15),
                           "new test 6 dB": with_noise(new_test, 6)})
    # what the thresholds are set on: val, and val in noise (Preset.calibrate_snr), as one set
    calibration = {"val": val, **{f"val {snr:g} dB": with_noise(val, snr) for snr in p.calibrate_snr}}
    if real is not None:
        conditions["real"] = load_fsdd(real, layout)

    cache = Path(work) / "cache" / "whisper"
    with cache_use() as use:  # what the teacher encodings took from the cache, and what they cost
        with report.stage("teacher"):
            if whisper_dir is None and not os.environ.get("HUBVOICE_WHISPER_DIR"):
                # the development model is assembled inside this build's work folder, not in ./work of
                # wherever the command was started
                from distill.teachers.whisper import find_model_dir

                whisper_dir = str(find_model_dir(None, cache=Path(work) / "whisper-base"))
            tcfg = replace(p.teacher, whisper_dir=whisper_dir, train=replace(p.teacher.train, seed=seed))
            t_pool, t_init = None, None
            if old_ctx is not None:  # fine-tune the earlier heads on the pool augmented part by part
                tcfg = replace(tcfg, train=p.update.train(tcfg.train, p.update.teacher_steps))
                t_pool = augmented_parts(train_parts, tcfg.copies, tcfg.augment, seed=seed)
                t_layout = HeadLayout.from_dict(old_teacher["model_config"]["layout"])

                def t_init(fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                    return update.grow_state(old_teacher["model"], fresh, t_layout, layout)
            # "val" in ``also`` replaces train_teacher's own val scores: the teacher is scored (and later
            # calibrated) on the val the student is, extra negatives included
            teacher, tmetrics, tprobs = train_teacher(train, fit_val, layout, tcfg, root / "teacher", cache_dir=cache,
                                                      also={**calibration, **conditions}, progress=progress,
                                                      pool=t_pool, init=t_init)
        report.found["teacher"] = _encoded(use, (0, 0)) + "; " + _resumed("head", had_teacher, tcfg.train.steps,
                                                                          source)
        before = len(use.found), len(use.encoded)
        with report.stage("student"):
            recipe = replace(p.student, train=replace(p.student.train, seed=seed))
            lexicon = None
            if recipe.train.ctc > 0 and recipe.train.ctc_units == "phones":
                # spells every word the grammar can hear, and the training transcripts (CTC targets)
                lexicon = make_lexicon([*ctx.vocabulary(), *(r.text for r in train.references if r.text)])
            s_pool, s_init = None, None
            if old_ctx is not None:
                recipe = replace(recipe, train=p.update.train(recipe.train, p.update.student_steps))
                s_pool = augmented_parts(train_parts, recipe.copies, recipe.augment, seed=seed)
                s_layout = HeadLayout.from_dict(old_student["model_config"]["layout"])
                old_units = (old_student["model_config"].get("ctc_lexicon") or {}).get("units")

                def s_init(fresh: dict[str, Any]) -> dict[str, Any]:
                    grown = {"model": update.grow_state(old_student["model"], fresh["model"], s_layout, layout,
                                                        prefix="student.")}
                    if fresh["ctc_head"] is not None:
                        if old_units is None or fresh["units"] is None or old_student.get("ctc_head") is None:
                            raise ConfigError(f"update: {source}'s student has no phone CTC head to start from")
                        grown["ctc_head"] = update.grow_ctc(old_student["ctc_head"], fresh["ctc_head"], old_units,
                                                            fresh["units"])
                    return grown
            student, _ = train_student(train, fit_val, layout, recipe, root / "student", teacher=teacher,
                                       teacher_window_s=tcfg.window_s, cache_dir=cache, progress=progress,
                                       lexicon=lexicon, pool=s_pool, init=s_init)
        more = (len(use.found), len(use.encoded)) != before
        report.found["student"] = (_encoded(use, before) + "; " if more else "") + _resumed(
            "student", had_student, recipe.train.steps, source)
        from_scratch = not reused_clips and not use.found and had_teacher is None and had_student is None
    graph = None
    if p.decoder is not None:
        assert student.ctc_lexicon is not None  # train_student attached the phone head it trained
        graph = GrammarGraph.from_lexicon(ctx, Lexicon.from_dict(student.ctc_lexicon))
    procs = max(1, min(2, os.cpu_count() or 1))
    scorer: Scorer | None = None

    def grammar_candidates(clips: ClipSet, probs: list[np.ndarray]) -> list[Any]:
        assert graph is not None and p.decoder is not None
        decoded = decoding.decode_all(graph, decoding.ctc_log_probs(student, clips), p.decoder, procs=procs)
        report.decode_s.extend(d[3] for d in decoded)
        return decoding.candidates(layout, probs, decoded, p.decoder.heads_weight, scorer)

    gate = 0.0
    with report.stage("calibrate"):
        refs = [r for clips in calibration.values() for r in clips.references]
        cal_probs = {name: student_probs(student, clips) for name, clips in calibration.items()}
        if p.decoder is None:
            joined = _joined(cal_probs)
            cal = calibrate_threshold(layout, joined[0], joined[1:], refs, target_far=p.target_far,
                                      target_wrong=p.target_wrong, far_kinds=p.far_kinds)
            threshold = min(1.0, cal.threshold)
        else:
            assert p.target_wrong is not None
            cal_cands = {name: grammar_candidates(clips, cal_probs[name]) for name, clips in calibration.items()}
            joined_cands = [c for cands in cal_cands.values() for c in cands]  # in the order of ``refs``
            if p.scorer:  # one threshold on the scorer's probability; the gate is then one of its features
                try:
                    scorer = decoding.fit_scorer(refs, joined_cands)
                except ValueError as err:  # e.g. no validation sentence right yet: a model too young to score
                    _LOGGER.warning("no scorer fitted (%s): the decoder's confidence and the heads' gate decide", err)
            if scorer is not None:
                cal_cands["val"] = decoding.rescored(cal_cands["val"], scorer)  # evaluated below
                threshold, gate = decoding.manifest_thresholds(decoding.calibrate(
                    refs, decoding.rescored(joined_cands, scorer), p.target_far, p.target_wrong,
                    far_kinds=p.far_kinds), -math.inf)
            else:
                threshold, gate = decoding.manifest_thresholds(*decoding.calibrate_gated(
                    refs, joined_cands, p.target_far, p.target_wrong, p.far_kinds))
        # The teacher at the same false-accept (and wrong-action) target, calibrated the same way: its
        # threshold-0 number lets through a quarter of the out-of-context clips, so it is not the student's peer.
        t_val = _joined({n: tprobs[n] for n in calibration})
        t_cal = calibrate_threshold(layout, t_val[0], t_val[1:], refs, target_far=p.target_far,
                                    target_wrong=p.target_wrong, far_kinds=p.far_kinds)
        t_threshold = min(1.0, t_cal.threshold)
    with report.stage("evaluate"):
        rows = []
        decided: dict[str, list[Decision]] = {}
        for name, clips in {"val": val, **conditions}.items():
            probs = cal_probs["val"] if name == "val" else student_probs(student, clips)
            if p.decoder is None:
                decided[name] = decide_all(layout, probs[0], probs[1:], threshold=threshold)
            else:
                cands = cal_cands["val"] if name == "val" else grammar_candidates(clips, probs)
                decided[name] = decoding.decisions(cands, threshold, gate)
            s = score(clips.references, decided[name], layout=layout)
            t_decided = decide_all(layout, tprobs[name][0], tprobs[name][1:], threshold=t_threshold)
            t = score(clips.references, t_decided, layout=layout)
            # commands carried out with a wrong intent or slot: what the second target bounds
            s_wrong = wrong_action_rate(clips.references, decided[name])
            t_wrong = wrong_action_rate(clips.references, t_decided)
            report.metrics[name] = {"student": {**_summary(s), "wrong_actions": s_wrong},
                                    "teacher": _summary(tmetrics[name]),
                                    "teacher_calibrated": {**_summary(t), "wrong_actions": t_wrong}}
            rows.append({"condition": name, "clips": s.n, "teacher, no rejection": tmetrics[name].command_acceptance,
                         "teacher at its threshold": t.command_acceptance, "teacher FAR": t.false_accept_rate,
                         "student at its threshold": s.command_acceptance, "student FAR": s.false_accept_rate,
                         "teacher commands right": t.commands_right, "student commands right": s.commands_right,
                         "teacher wrong actions": t_wrong, "student wrong actions": s_wrong})
    with report.stage("export"):
        samples = _pick_samples(test, decided["test clean"], threshold)
        enc_params, enc_macs = whisper_encoder_cost(teacher.head.cfg.d_in, tcfg.window_s)
        cost = {"teacher_params": enc_params + count_parameters(teacher.head), "teacher_macs_per_s": enc_macs,
                "student_params": count_parameters(student), "student_macs_per_s": macs_per_second(student)}
        tables = {
            "Command acceptance (held-out voices)": format_table(
                rows, ["condition", "clips", "teacher, no rejection", "teacher at its threshold", "teacher FAR",
                       "student at its threshold", "student FAR", "teacher commands right", "student commands right",
                       "teacher wrong actions", "student wrong actions"],
                percent=["teacher, no rejection", "teacher at its threshold", "teacher FAR", "student at its threshold",
                         "student FAR", "teacher commands right", "student commands right", "teacher wrong actions",
                         "student wrong actions"])
            + "\n\n" + threshold_note(p, threshold, t_threshold, gate if p.decoder is not None else None,
                                     scorer is not None)
            + decode_note(report.decode_s),
            "Size": format_table([{"model": "teacher (Whisper base encoder + heads)",
                                   "params": cost["teacher_params"], "MMACs/s": enc_macs / 1e6},
                                  {"model": "student", "params": cost["student_params"],
                                   "MMACs/s": cost["student_macs_per_s"] / 1e6}], ["model", "params", "MMACs/s"]),
            "Build": build_section(context_path, out, preset_name, seed, utterances, report.stages_s,
                                   p.target_wrong, report.peak_rss_mb, p.far_kinds, calibration_negatives,
                                   report.found, from_scratch, source),
        }
        calib = calibration_clips(train, CALIBRATION_CLIPS, seed)
        bundle_args: dict[str, Any] = dict(
            student=student, layout=layout, context_path=context_path, threshold=threshold, samples=samples,
            calibration_clips=calib, quantize=p.quantize,
            teacher_info={"name": teacher.name, "window_s": tcfg.window_s},
            recipe={"preset": preset_name, "seed": seed, "utterances": utterances or p.utterances,
                    "student": recipe.student.to_dict(), "train": recipe.train.to_dict(), "copies": recipe.copies,
                    "target_far": p.target_far, "target_wrong": p.target_wrong,
                    "far_kinds": list(p.far_kinds) if p.far_kinds is not None else None,
                    "calibration_negatives": calibration_negatives, "calibrate_snr": list(p.calibrate_snr),
                    "quantize": p.quantize,
                    **({"update_from": str(source), "update": asdict(p.update)} if source is not None else {})},
            metrics={**{f"{name} acceptance".replace(" ", "_"): round(m["student"]["command_acceptance"], 4)
                        for name, m in report.metrics.items()},
                     "test_clean_false_accept_rate": report.metrics["test clean"]["student"]["false_accept_rate"],
                     # the commands alone: the acceptance above also counts each rejected negative as right
                     "test_clean_commands_right": report.metrics["test clean"]["student"]["commands_right"],
                     "teacher_test_clean_acceptance": round(
                         report.metrics["test clean"]["teacher"]["command_acceptance"], 4),
                     "teacher_test_clean_acceptance_at_its_threshold": round(
                         report.metrics["test clean"]["teacher_calibrated"]["command_acceptance"], 4),
                     "threshold": round(threshold, 4), "teacher_threshold": round(t_threshold, 6), **cost,
                     **({"gate": round(gate, 4)} if p.decoder is not None else {})},
            card_tables=tables, overwrite=overwrite,
            decoder=replace(p.decoder, gate=gate, scorer=scorer) if p.decoder is not None else None,
        )
        # only the samples the shipped (int8) model gets right: a sample is a command and its meaning
        bundle = write_bundle(out, **bundle_args, drop_mismatched=True)
    report.stages_s["total"] = round(time.time() - started, 1)
    report.peak_rss_mb["total"] = peak_rss_mb()
    (root / "build.json").write_text(json.dumps({"stages_s": report.stages_s, "peak_rss_mb": report.peak_rss_mb,
                                                 "decode_ms": _percentiles(report.decode_s),
                                                 "from_the_work_folder": report.found, "from_scratch": from_scratch,
                                                 "metrics": report.metrics,
                                                 "thresholds": {"student": threshold, "teacher": t_threshold,
                                                                **({"gate": gate} if p.decoder else {})},
                                                 "machine": f"{platform.machine()} {torch.get_num_threads()} threads"},
                                                indent=2))
    print(tables["Command acceptance (held-out voices)"])
    print(stage_table(report.stages_s, dict(report.peak_rss_mb), report.found))
    return bundle
