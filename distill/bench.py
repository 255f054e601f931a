"""`hubvoice-distill bench`: teacher, student fp32 and student int8 side by side, measured the same way.

Per model: parameters, file bytes, MACs per second of audio, latency of one utterance
(p50/p95 over ``runs`` timed runs after ``warmup``, one intra-op and one inter-op thread; for a
bundle that decodes through its grammar, the network's run *and* the grammar search, as the hub
decides),
real-time factor (p50 latency / utterance seconds), peak RSS of the inference process and
command acceptance on a corpus split.

Every model is timed in a fresh subprocess of its own (``python -m distill.bench WORKER``)
that loads only what its row needs — the students and the ONNX teacher through ONNX Runtime
exactly as the hub runs a bundle (torch is never imported there, and the worker reports that
it was not); the CTranslate2 and torch teachers as Python objects (Whisper encoder + the
torch head) — and reports its own peak resident memory (``VmHWM``, see :func:`_rss_kib`):
that of a process that did nothing but load the model and run it. Every model hears the
same clip: the longest clip of the split (a bundle sample without a corpus), cut or
zero-padded to ``seconds`` (the teachers then fit it to their own window).

Where the rows come from: the int8 row is the bundle's ``model.onnx``; the fp32 row its
``model.fp32.onnx`` when kept, else the build's student checkpoint (the one of ``last.pt``
and ``best.pt`` closest to the int8 model on the bundle samples) exported as the bundle
export does. The teacher rows need the build's ``teacher/best.pt`` and the Whisper model;
one row per engine of :data:`TEACHER_ENGINES` (the same weights and head): the teacher as
built (CTranslate2 encoder, int8 compute), the encoder in torch fp32
(:class:`distill.teachers.whisper_torch.TorchWhisperEncoder`, read from the same
``model.bin``), and the whole teacher as one fp32 ONNX graph exported from that
(:func:`distill.teachers.whisper_torch.export_teacher`; log-mel inside, into a temporary
folder). Acceptance reuses ``eval``'s code (:func:`distill.assess.decide_clips`) for the
students and scores the teachers as ``build`` does (:func:`distill.evaluate.decide_all` at
threshold 0, as :func:`distill.teach.probs_metrics`); each teacher row also says on how many
clips it decides exactly as the first teacher row (``agreement``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assistant.bundle import Bundle, load_bundle, open_session, read_manifest
from assistant.context import load_context
from assistant.decode import HeadLayout, decode
from assistant.errors import BundleError, ConfigError, HubvoiceError
from assistant.grammar import SEARCH_ENGINE, best_candidate, grammar_decision
from assistant.recognizer import Recognizer
from assistant.wav import SAMPLE_RATE, read_wav

_LOGGER = logging.getLogger(__name__)

TARGETS = {"int8_max_bytes": 250_000, "latency_p50_max_ms": 3.0, "min_speedup": 20.0}
"""Issue 4's targets for the student int8 model, checked in the report (not enforced)."""
TEACHER_THRESHOLD = 0.0
"""The teacher decides at threshold 0, as ``build`` scores it (only students are calibrated)."""
TEACHER_ENGINES = ("ct2", "torch", "onnx")
"""Teacher rows: CTranslate2 (int8, as built), torch fp32, ONNX fp32 (ONNX Runtime)."""
_TEACHER_ROWS = {"ct2": "teacher CTranslate2 int8 + torch head", "torch": "teacher torch fp32",
                 "onnx": "teacher ONNX fp32"}


# --- the worker: one model, one process ------------------------------------------------------------


def _rss_kib() -> int:
    """Peak resident memory of this process in KiB: ``VmHWM`` of its address space on Linux.

    ``ru_maxrss`` would do elsewhere, but on Linux it also counts the parent's memory at the
    ``exec`` that started this process (a worker of a 1 GB parent would report 1 GB).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux, bytes on macOS


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one model, time it on the clip; returns latencies (ms) and peak RSS (KiB)."""
    x = np.load(spec["clip"]).astype(np.float32)
    base = _rss_kib()
    network: list[float] = []  # ONNX Runtime's share of each run (student bundles)
    search = None
    if spec["kind"] == "onnx":
        m = read_manifest(spec["bundle"])
        session = open_session(Path(spec["model"]), threads=1)
        # the grammar as the hub holds it (None: the heads decide); not load_bundle, whose graph checks would open
        # more ONNX sessions and count in this process's peak memory
        folder = Path(spec["bundle"])
        graph = Bundle(folder, m, load_context(folder / m.context.file)).grammar
        search = SEARCH_ENGINE if graph is not None else None

        def run() -> None:
            start = time.perf_counter()
            out = session.run(None, {m.input: x[None]})
            network.append(1000.0 * (time.perf_counter() - start))
            heads = [p[0] for p in out[: len(m.outputs)]]
            if graph is None or m.decoder is None:
                decode(m.layout, heads[0], heads[1:], threshold=m.threshold)
                return
            settings = m.decoder.settings
            candidate = best_candidate(graph, m.layout, out[len(m.outputs)][0], heads, settings)
            grammar_decision(candidate, m.threshold, settings.gate)
    elif spec["kind"] == "teacher_onnx":
        layout = read_manifest(spec["bundle"]).layout
        session = open_session(Path(spec["model"]), threads=1)
        samples = int(spec["samples"])

        def run() -> None:
            probs = session.run(None, {"audio": fit_window([x], samples)})
            decode(layout, probs[0][0], [p[0] for p in probs[1:]], threshold=TEACHER_THRESHOLD)
    else:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        teacher = load_teacher(spec["model"], spec["whisper"], threads=1, engine=spec.get("engine", "ct2"))

        def run() -> None:
            probs = teacher.predict([x]).probs
            decode(teacher.layout, probs[0][0], [p[0] for p in probs[1:]], threshold=TEACHER_THRESHOLD)
    for _ in range(spec["warmup"]):
        run()
    network.clear()
    times = []
    for _ in range(spec["runs"]):
        start = time.perf_counter()
        run()
        times.append(1000.0 * (time.perf_counter() - start))
    return {"latency_ms": times, "base_rss_kib": base, "peak_rss_kib": _rss_kib(),
            "torch_loaded": "torch" in sys.modules, "network_ms": network, "search": search}


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "distill.bench", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise HubvoiceError(f"benchmark worker for {spec['model']} failed: {proc.stderr.strip()[-800:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    t = np.asarray(out.pop("latency_ms"))
    net = np.asarray(out.pop("network_ms", []))
    if net.size:
        out["network_ms"] = {"p50": float(np.percentile(net, 50)), "p95": float(np.percentile(net, 95))}
    return {**out, "latency_ms": {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)),
                                  "mean": float(t.mean()), "min": float(t.min())}}


# --- the models -------------------------------------------------------------------------------------


def fit_window(audio: Sequence[np.ndarray], samples: int) -> np.ndarray:
    """Clips cut or zero-padded to ``samples``: ``[batch, samples]`` float32, as ``WhisperFeatures`` fits them."""
    batch = np.zeros((len(audio), samples), dtype=np.float32)
    for i, clip in enumerate(audio):
        clip = clip[:samples]
        batch[i, : len(clip)] = clip
    return batch


def _load_head(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """The head of a teacher checkpoint and its ``model_config``."""
    from distill.teachers.neural import EncoderHead, HeadConfig
    from distill.train import load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    config = ckpt.get("model_config") or {}
    if config.get("kind") != "encoder_head":
        raise BundleError(f"{checkpoint}: expected a teacher checkpoint (model_config.kind 'encoder_head'), "
                          f"got {config.get('kind')!r}")
    head = EncoderHead(config["head_sizes"], HeadConfig.from_dict(config["head"]))
    head.load_state_dict(ckpt["model"])
    return head.eval(), config


def load_teacher(checkpoint: str | Path, whisper_dir: str | Path | None, threads: int = 0,
                 engine: str = "ct2") -> Any:
    """The built teacher: Whisper encoder + the head of ``checkpoint``.

    ``engine`` 'ct2': the encoder in CTranslate2 with int8 compute (as ``build`` trains and
    uses it; ``threads`` intra-op threads, 0 = all cores); 'torch': the same weights in torch
    fp32 (:class:`~distill.teachers.whisper_torch.TorchWhisperEncoder`; torch's thread count
    is the caller's).
    """
    from distill.teachers.neural import EncoderTeacher

    if engine not in ("ct2", "torch"):
        raise ConfigError(f"load_teacher: engine must be 'ct2' or 'torch', got {engine!r} "
                          "(the ONNX teacher is a file: see export_teacher)")
    head, config = _load_head(checkpoint)
    window = float(config["window_s"])
    encoder: Any
    if engine == "ct2":
        from distill.teachers.whisper import WhisperEncoder

        encoder = WhisperEncoder(whisper_dir, window_s=window, threads=threads)
    else:
        from distill.teachers.whisper_torch import TorchWhisperEncoder

        encoder = TorchWhisperEncoder(whisper_dir, window_s=window)
    return EncoderTeacher(encoder, head, HeadLayout.from_dict(config["layout"]))


def _teacher_cost(encoder_cfg: Any, encoder_params: int, head: Any, window: float) -> tuple[int, float]:
    """(parameters, MACs per second of the encoder window): the encoder's (counted and analytic), plus the head."""
    from distill.nets.profile import count_parameters

    cfg = head.cfg
    frames = 50.0 / cfg.pool_stride  # encoder frames per second, pooled
    n_heads = len(head.head_sizes)
    per_frame = cfg.d_in * cfg.hidden + cfg.hidden * 5 * 8 + 3 * cfg.hidden * n_heads  # proj, mix, attention, pool
    # transformer layers (HeadConfig.layers): q, k, v, out (4 h²) + a 2h-wide feed-forward (4 h²), and the
    # scores and their weighted sum over the window's frames (2 h per frame pair)
    per_frame += cfg.layers * (8 * cfg.hidden**2 + 2 * cfg.hidden * frames * window)
    head_macs = frames * per_frame + 2 * cfg.hidden * sum(head.head_sizes) / window
    return encoder_params + count_parameters(head), encoder_cfg.macs_per_second(window) + head_macs


def _student_checkpoint(build: Path, bundle: Any) -> tuple[Any, Path, float] | None:
    """The build's student closest to the bundle's int8 model on its samples: (student, path, max |Δp|)."""
    from distill.export import load_student, torch_probabilities

    session = open_session(bundle.model_path)
    best = None
    for path in (build / "student" / "last.pt", build / "student" / "best.pt"):
        if not path.is_file():
            continue
        student, layout = load_student(path)
        if layout != bundle.layout:
            raise BundleError(f"{path}: the student's head layout differs from the bundle {bundle.path}'s")
        diff = 0.0
        for sample in bundle.manifest.samples:
            audio = read_wav(bundle.path / sample.audio.file)[None]
            ref = session.run(None, {bundle.manifest.input: audio})
            got = torch_probabilities(student, audio)
            diff = max(diff, *(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True)))
        if best is None or diff < best[2]:
            best = (student, path, diff)
    return best


def _clip(clips: Any, bundle: Any, seconds: float) -> tuple[np.ndarray, str]:
    """The longest clip of the split (or bundle sample), cut or zero-padded to ``seconds``."""
    if clips is not None:
        i = int(np.argmax([len(a) for a in clips.audio]))
        audio, name = clips.audio[i], f"corpus:{clips.keys[i]}"
    else:
        files = [bundle.path / s.audio.file for s in bundle.manifest.samples]
        audios = [read_wav(f) for f in files]
        i = int(np.argmax([len(a) for a in audios]))
        audio, name = audios[i], f"sample:{files[i].name}"
    n = int(round(seconds * SAMPLE_RATE))
    return np.pad(audio[:n], (0, max(0, n - len(audio)))).astype(np.float32), name


def _teacher_probs(engine: str, model: Any, audio: Sequence[np.ndarray], samples: int) -> list[np.ndarray]:
    """Per-head probabilities of one teacher engine for every clip, in batches of 16."""
    out: list[list[np.ndarray]] = []
    for s in range(0, len(audio), 16):
        batch = list(audio[s : s + 16])
        if engine == "onnx":
            out.append(model.run(None, {"audio": fit_window(batch, samples)}))
        else:
            out.append(model.predict(batch).probs)
    return [np.concatenate([p[h] for p in out]) for h in range(len(out[0]))]


def _teacher_rows(checkpoint: Path, whisper_dir: str | Path | None, engines: Sequence[str], bundle: Any,
                  clips: Any, common: dict[str, Any], tmp: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per teacher engine (timed in workers), with acceptance and agreement on ``clips``; and notes."""
    import torch

    from distill.evaluate import decide_all, score
    from distill.export import output_names
    from distill.nets.profile import count_parameters
    from distill.teachers.whisper import WhisperFeatures, find_model_dir
    from distill.teachers.whisper_torch import export_teacher, load_encoder_net

    layout = bundle.manifest.layout
    wdir = find_model_dir(whisper_dir).resolve()
    head, config = _load_head(checkpoint)
    if HeadLayout.from_dict(config["layout"]) != layout:
        raise BundleError(f"{checkpoint}: the teacher's head layout differs from the bundle {bundle.path}'s")
    window = float(config["window_s"])
    samples = WhisperFeatures(window).samples
    net = load_encoder_net(wdir)
    params, macs = _teacher_cost(net.cfg, count_parameters(net), head, window)
    weights_bytes = (wdir / "model.bin").stat().st_size + checkpoint.stat().st_size
    rows: list[dict[str, Any]] = []
    notes = [f"teacher rows: the same Whisper encoder ({wdir / 'model.bin'}, {net.cfg.n_layers} layers, d_model "
             f"{net.cfg.d_model}) and head ({checkpoint}) on a {window:g}-s window, in {', '.join(engines)}; "
             "'× teacher' is relative to the first teacher row"]
    first: tuple[list[Any], list[np.ndarray]] | None = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the acceptance passes run on one thread, as the timed workers
    try:
        for engine in engines:
            row: dict[str, Any] = {"model": _TEACHER_ROWS[engine], "engine": engine, "params": params,
                                   "macs_per_s": macs, "window_s": window, "threshold": TEACHER_THRESHOLD}
            model: Any
            if engine == "onnx":
                start = time.perf_counter()
                path = export_teacher(net, head, tmp / "teacher.fp32.onnx", samples=samples,
                                      outputs=output_names(layout))
                export_s = time.perf_counter() - start
                row.update(file=str(path), bytes=path.stat().st_size, export_s=export_s,
                           **_measure({**common, "kind": "teacher_onnx", "model": str(path), "samples": samples}))
                notes.append(f"teacher ONNX fp32: audio [batch, {samples}] in (log-mel as a DFT convolution inside), "
                             f"probabilities out; exported in {export_s:.1f} s to a temporary file, its bytes are "
                             "that file's")
                model = open_session(path, threads=1) if clips is not None else None
            else:
                row.update(file=str(checkpoint), bytes=weights_bytes,
                           **_measure({**common, "kind": "teacher", "engine": engine, "model": str(checkpoint.resolve()),
                                       "whisper": str(wdir)}))
                model = load_teacher(checkpoint, wdir, threads=1, engine=engine) if clips is not None else None
            if clips is not None:
                probs = _teacher_probs(engine, model, clips.audio, samples)
                decisions = decide_all(layout, probs[0], probs[1:], threshold=TEACHER_THRESHOLD)
                row["metrics"] = score(clips.references, decisions, layout=layout).to_dict()
                if first is None:
                    first = (decisions, probs)
                same = [(a.understood, a.intent, a.slots) == (b.understood, b.intent, b.slots)
                        for a, b in zip(decisions, first[0], strict=True)]
                row["agreement"] = float(np.mean(same))
                row["max_abs_dprob"] = max(float(np.abs(p - q).max()) for p, q in zip(probs, first[1], strict=True))
            del model
            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    if any(e != "onnx" for e in engines):
        notes.append("teacher bytes (CTranslate2, torch): Whisper model.bin (whole model, decoder included; the torch "
                     "encoder reads only the encoder's variables) + the head checkpoint (optimizer state included)")
    notes.append("teacher params: the encoder's (counted, position table excluded) + the head's; MACs per second of "
                 "the fixed encoder window, log-mel frontend not counted")
    if clips is not None:
        notes.append(f"teacher agreement: share of the {len(clips)} clips each teacher row decides exactly as the "
                     "first (understood, intent, slots); max_abs_dprob in the JSON")
    return rows, notes


# --- the benchmark -----------------------------------------------------------------------------------


def bench(bundle_dir: str | Path, *, build: str | Path | None = None, teacher: str | Path | None = None,
          whisper_dir: str | Path | None = None, corpus: str | Path | None = None, split: str = "test",
          runs: int = 200, warmup: int = 20, seconds: float = 3.0,
          teacher_engines: Sequence[str] = TEACHER_ENGINES) -> dict[str, Any]:
    """Measure the models (see the module docstring); returns the JSON report, ``table`` included.

    ``teacher_engines``: the teacher rows to measure, some of :data:`TEACHER_ENGINES`, rows in the
    order given.
    """
    from distill.assess import decide_clips
    from distill.data import load_corpus
    from distill.evaluate import format_table, score
    from distill.export import export_model
    from distill.nets.profile import count_parameters, macs_per_second

    if runs < 1 or warmup < 0 or not 0 < seconds <= 30:
        raise ConfigError(f"bench: expected runs >= 1, warmup >= 0, 0 < seconds <= 30; got {runs}, {warmup}, {seconds}")
    unknown = sorted(set(teacher_engines) - set(TEACHER_ENGINES))
    if unknown or not teacher_engines:
        raise ConfigError(f"bench: teacher engines must be some of {', '.join(TEACHER_ENGINES)}; got "
                          f"{', '.join(teacher_engines) or 'none'}")
    load = list(os.getloadavg())
    b = load_bundle(bundle_dir)
    m = b.manifest
    build_dir = Path(build) if build is not None else None
    if build_dir is not None and not build_dir.is_dir():
        raise ConfigError(f"{build_dir}: no such build folder (expected work/build-<name>-<preset>-s<seed>)")
    if corpus is None and build_dir is not None and (build_dir / "corpus").is_dir():
        corpus = build_dir / "corpus"
    if teacher is None and build_dir is not None and (build_dir / "teacher" / "best.pt").is_file():
        teacher = build_dir / "teacher" / "best.pt"
    elif teacher is not None and Path(teacher).is_dir():
        teacher = Path(teacher) / "best.pt"
    if teacher is not None and not Path(teacher).is_file():
        raise ConfigError(f"{teacher}: no teacher checkpoint (expected BUILD/teacher/best.pt)")
    clips = load_corpus(corpus, m.layout, splits=(split,)) if corpus is not None else None
    notes: list[str] = []
    found = _student_checkpoint(build_dir, b) if build_dir is not None else None
    student = found[0] if found else None
    params = count_parameters(student) if student is not None else m.metrics.get("student_params")
    macs = macs_per_second(student, seconds) if student is not None else m.metrics.get("student_macs_per_s")
    if student is None:
        notes.append("student parameters and MACs from the manifest's metrics (no build given)")
    with tempfile.TemporaryDirectory(prefix="hubvoice-bench-") as tmp:
        audio, source = _clip(clips, b, seconds)
        np.save(Path(tmp) / "clip.npy", audio)
        common = {"clip": str(Path(tmp) / "clip.npy"), "runs": runs, "warmup": warmup, "bundle": str(b.path)}
        fp32, fp32_source = b.reference_path, "bundle"
        if fp32 is None and found is not None:
            fp32 = export_model(found[0], Path(tmp) / "model.fp32.onnx", m.layout)
            fp32_source = f"{found[1]} exported (max |p - p_int8| on the bundle samples {found[2]:.3g})"
        if fp32 is None:
            notes.append("no student fp32 row: the bundle kept no model.fp32.onnx and no --build was given")
        rows: list[dict[str, Any]] = []
        if teacher is not None:
            t_rows, t_notes = _teacher_rows(Path(teacher), whisper_dir, teacher_engines, b, clips, common, Path(tmp))
            rows += t_rows
            notes += t_notes
        else:
            notes.append("no teacher row: give --build (with teacher/best.pt) or --teacher")
        for name, path, ref in (("student fp32 (ONNX)", fp32, True), (f"student {m.precision} (ONNX)", b.model_path,
                                                                           False)):
            if path is None:
                continue
            row = {"model": name, "file": str(path), "params": params, "bytes": Path(path).stat().st_size,
                   "macs_per_s": macs, "threshold": m.threshold,
                   **({"source": fp32_source} if ref else {}),
                   **_measure({**common, "kind": "onnx", "model": str(path)})}
            if clips is not None:
                recognizer = Recognizer(b, threads=1)
                if ref:
                    recognizer.session = open_session(Path(path), 1)
                decisions, _ = decide_clips(recognizer, clips)
                row["metrics"] = score(clips.references, decisions, layout=m.layout).to_dict()
            rows.append(row)
    for row in rows:
        row["rtf"] = row["latency_ms"]["p50"] / 1000.0 / seconds
        row["acceptance"] = row.get("metrics", {}).get("command_acceptance")
        if rows[0]["model"].startswith("teacher"):
            row["speedup"] = rows[0]["latency_ms"]["p50"] / row["latency_ms"]["p50"]
    for row in rows:
        if row.get("search") and "network_ms" in row:
            notes.append(f"{row['model']}: the network alone p50 {row['network_ms']['p50']:.2f} ms; the rest is the "
                         f"grammar search ({row['search']} engine) and the decision")
    int8 = rows[-1]
    checks = {"int8_max_bytes": int8["bytes"] <= TARGETS["int8_max_bytes"],
              "latency_p50_max_ms": int8["latency_ms"]["p50"] <= TARGETS["latency_p50_max_ms"],
              "min_speedup": int8["speedup"] >= TARGETS["min_speedup"] if "speedup" in int8 else None}
    notes.append("targets (student int8): " + ", ".join(f"{k} {TARGETS[k]:g}: {'—' if v is None else 'met' if v else 'MISSED'}"
                                                      for k, v in checks.items()))
    columns = ["model", "params", "kB", "MMACs/s", "p50 ms", "p95 ms", "RTF", "peak RSS MiB", "acceptance",
               "agreement", "× teacher"]
    table = format_table([{"model": r["model"], "params": r["params"], "kB": r["bytes"] / 1000,
                           "MMACs/s": r["macs_per_s"] / 1e6 if r["macs_per_s"] is not None else None,
                           "p50 ms": r["latency_ms"]["p50"], "p95 ms": r["latency_ms"]["p95"], "RTF": r["rtf"],
                           "peak RSS MiB": r["peak_rss_kib"] / 1024, "acceptance": r["acceptance"],
                           "agreement": r.get("agreement"), "× teacher": r.get("speedup")} for r in rows], columns,
                         percent=["acceptance", "agreement"])
    return {"bundle": str(b.path), "build": str(build_dir) if build_dir else None,
            "corpus": str(corpus) if corpus is not None else None, "split": split if clips is not None else None,
            "clips": len(clips) if clips is not None else 0, "input": source, "seconds": seconds, "runs": runs,
            "warmup": warmup, "threads": 1,
            "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                        "load_average_at_start": load},
            "rows": rows, "targets": {k: {"target": TARGETS[k], "met": v} for k, v in checks.items()},
            "notes": notes, "table": table}


def main(argv: list[str]) -> int:
    """Worker entry point: ``python -m distill.bench SPEC_JSON`` prints one JSON line."""
    print(json.dumps(_worker(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
