"""A student with a phone CTC head exports a ``ctc`` output; its bundle decodes through the grammar on the hub.

Tiny random student, a letter "lexicon" (no espeak-ng needed): the hub's decisions, made without
torch, must equal the ones the build scores (torch log-probabilities through :mod:`distill.decoding`),
the streaming graph must give the whole utterance's steps, and a tampered or mismatched lexicon or
decoder section must be refused naming the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from assistant.bundle import load_bundle, sha256_file  # noqa: E402
from assistant.context import parse_context  # noqa: E402
from assistant.decode import HeadLayout  # noqa: E402
from assistant.errors import ConfigError  # noqa: E402
from assistant.grammar import GrammarGraph, GrammarSettings, Lexicon, Scorer  # noqa: E402
from assistant.recognizer import Recognizer  # noqa: E402
from assistant.wav import read_wav  # noqa: E402
from distill import decoding  # noqa: E402
from distill.bundle import write_bundle  # noqa: E402
from distill.data import ClipSet  # noqa: E402
from distill.evaluate import Reference  # noqa: E402
from distill.export import head_sizes, load_student, torch_probabilities  # noqa: E402
from distill.nets.student import Student, StudentConfig  # noqa: E402
from distill.train import TrainConfig, save_checkpoint  # noqa: E402
from tests.distill.test_export import CONTEXT, speechlike  # noqa: E402
from tests.no_torch import BLOCK_TORCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("turn", "on", "off", "the", "kitchen", "bedroom", "lights", "play", "some", "music", "in")
LEXICON = {"units": sorted({c for w in WORDS for c in w}), "words": {w: list(w) for w in WORDS}}
SETTINGS = GrammarSettings(blank_penalty=1.0, heads_weight=0.5, gate=0.0, beam=300)


def ctc_student(seed: int = 0) -> tuple[Student, HeadLayout]:
    layout = HeadLayout.from_context(parse_context(CONTEXT))
    torch.manual_seed(seed)
    student = Student(head_sizes(layout), StudentConfig(channels=16, dilations=(1, 2, 4))).eval()
    head = torch.nn.Linear(16, len(LEXICON["units"]) + 1)
    with torch.no_grad():
        head.weight.mul_(4.0)  # sharper than at initialization: paths differ clearly between sentences
    student.attach_ctc(head.eval(), LEXICON)
    return student, layout


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("grammar")
    (base / "context.yaml").write_text(CONTEXT)
    student, layout = ctc_student()
    return write_bundle(
        base / "ctc", student=student, layout=layout, context_path=base / "context.yaml", threshold=0.0,
        samples=[(speechlike(n, i), None) for i, n in enumerate((12000, 16001, 20000, 9999))],
        calibration_clips=[speechlike(8000 + 1500 * i, 50 + i) for i in range(8)],
        teacher_info={"name": "none"}, recipe={}, metrics={}, card_tables={}, quantize="weights", keep_fp32=True,
        decoder=SETTINGS)


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def test_the_graphs_give_per_step_ctc_log_probabilities(folder: Path) -> None:
    student, _ = ctc_student()
    audio = speechlike(16000, 7)[None]
    session = ort.InferenceSession(str(folder / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()][-1] == "ctc"
    got = session.run(None, {"audio": audio})[-1]
    want = torch_probabilities(student, audio)[-1]
    assert got.shape == want.shape == (1, 16000 // 320, len(LEXICON["units"]) + 1)  # one step per 20 ms
    np.testing.assert_allclose(np.exp(got).sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.exp(got), np.exp(want), atol=1e-4)
    data = _manifest(folder)
    assert data["decoder"] == {"kind": "grammar", "lexicon": data["decoder"]["lexicon"], **SETTINGS.to_dict()}
    assert json.loads((folder / "lexicon.json").read_text()) == LEXICON
    assert "decoded through the context's grammar" in (folder / "MODEL_CARD.md").read_text()


def test_streaming_gives_the_same_grammar_decision_as_the_whole_utterance(folder: Path) -> None:
    """The streaming graph is fp32: its confidence matches the fp32 whole-utterance model's, and its decision
    the bundle's int8 model's."""
    recognizer = Recognizer(load_bundle(folder))
    reference = Recognizer(load_bundle(folder), reference=True)
    for seed, n in enumerate((9600, 16000, 23999)):
        audio = speechlike(n, 20 + seed)
        usable = audio[: n - n % 320]
        whole = recognizer.recognize(usable).to_dict()
        fp32 = reference.recognize(usable).to_dict()
        stream = recognizer.stream()
        for start in range(0, len(audio), 1234):  # chunks of any length
            stream.feed(audio[start : start + 1234])
        assert sum(len(c) for c in stream.ctc) == len(usable) // 320
        got = stream.result().to_dict()
        assert (got["understood"], got["intent"], got["slots"]) == (whole["understood"], whole["intent"],
                                                                     whole["slots"])
        assert got["confidence"] == pytest.approx(fp32["confidence"], abs=1e-3)
        assert got["confidence"] == pytest.approx(whole["confidence"], abs=0.02)  # int8 weights


def test_a_checkpoint_with_a_phone_head_loads_with_it_attached(tmp_path: Path) -> None:
    student, layout = ctc_student(3)
    config = {"kind": "student", "head_sizes": list(student.head_sizes), "student": student.cfg.to_dict(),
              "layout": layout.to_dict(), "ctc_lexicon": LEXICON}
    assert student.ctc_head is not None
    head, student.ctc_head = student.ctc_head, None
    save_checkpoint(tmp_path / "s.pt", student, torch.optim.SGD(student.parameters(), lr=0.1), 1, TrainConfig(),
                    config, {}, None, head)
    loaded, _ = load_student(tmp_path / "s.pt")
    assert loaded.ctc_lexicon == LEXICON and loaded.ctc_head is not None
    torch.testing.assert_close(loaded.ctc_head.weight, head.weight)
    with pytest.raises(ConfigError, match="expected 16 -> "):
        loaded.attach_ctc(torch.nn.Linear(16, 3), LEXICON)


_HUB = BLOCK_TORCH + """
import json, sys
import numpy as np
from assistant.bundle import load_bundle
from assistant.errors import BundleError
from assistant.recognizer import Recognizer

for folder in sys.argv[2:]:
    try:
        bundle = load_bundle(folder)
    except BundleError as err:
        print(json.dumps({"refused": str(err)}))
        continue
    fp32 = Recognizer(bundle, reference=True)
    clips = np.load(sys.argv[1])
    print(json.dumps([fp32.recognize(c).to_dict() for c in clips]))
assert not any(m.split(".")[0] in ("torch", "torchaudio") for m in sys.modules)
"""


def test_the_hub_decides_as_the_build_scores_and_refuses_a_bad_lexicon(folder: Path, tmp_path: Path) -> None:
    student, layout = ctc_student()
    clips = [speechlike(16000, 100 + i) for i in range(6)]
    np.save(tmp_path / "clips.npy", np.stack(clips))
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    (tampered / "lexicon.json").write_text((folder / "lexicon.json").read_text().replace('"kitchen"', '"kitchens"'))
    short = tmp_path / "short"  # a lexicon that cannot spell "music", its manifest updated to match
    shutil.copytree(folder, short)
    lexicon = json.loads((folder / "lexicon.json").read_text())
    del lexicon["words"]["music"]
    (short / "lexicon.json").write_text(json.dumps(lexicon))
    data = _manifest(folder)
    data["decoder"]["lexicon"]["sha256"] = sha256_file(short / "lexicon.json")
    (short / "manifest.json").write_text(json.dumps(data))
    odd = tmp_path / "odd"  # a gate outside [0, 1]
    shutil.copytree(folder, odd)
    data = _manifest(folder)
    data["decoder"]["gate"] = 1.5
    (odd / "manifest.json").write_text(json.dumps(data))
    scorer = Scorer((1.0, -0.5, 0.25, 0.5, 2.0, 0.1, 0.2), -0.3)
    scored = tmp_path / "scored"  # decides by a scorer's probability
    shutil.copytree(folder, scored)
    data = _manifest(folder)
    data["decoder"]["scorer"] = scorer.to_dict()
    (scored / "manifest.json").write_text(json.dumps(data))
    unknown = tmp_path / "unknown"  # a scorer of features this hubvoice does not compute
    shutil.copytree(folder, unknown)
    data["decoder"]["scorer"]["features"][1] = "loudness"
    (unknown / "manifest.json").write_text(json.dumps(data))

    done = subprocess.run([sys.executable, "-c", _HUB, str(tmp_path / "clips.npy"), str(folder), str(scored),
                           str(tampered), str(short), str(odd), str(unknown)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    hub, hub_scored, refusals = lines[0], lines[1], lines[2:]
    # what the build scores: torch log-probabilities and heads through the same decoder
    refs = [Reference(None, kind="noise") for _ in clips]
    clipset = ClipSet("t", clips, refs, np.zeros((len(clips), 1 + len(layout.slots)), np.int64),
                      [str(i) for i in range(len(clips))])
    graph = GrammarGraph.from_lexicon(parse_context(CONTEXT), Lexicon.from_dict(LEXICON))
    decoded = decoding.decode_all(graph, decoding.ctc_log_probs(student, clipset), SETTINGS)
    heads = [np.concatenate([torch_probabilities(student, c[None])[h] for c in clips]) for h in range(3)]
    want = decoding.decisions(decoding.candidates(layout, heads, decoded, SETTINGS.heads_weight), 0.0, 0.0)
    assert [(r["intent"], r["slots"]) for r in hub] == [(d.intent, d.slots) for d in want]
    assert all(r["understood"] for r in hub)  # threshold and gate 0: the best sentence is always taken
    assert [r["confidence"] for r in hub] == pytest.approx([d.confidence for d in want], abs=2e-3)
    # with a scorer: the same sentences, its probability as the confidence
    want = decoding.decisions(decoding.candidates(layout, heads, decoded, SETTINGS.heads_weight, scorer), 0.0, 0.0)
    assert [(r["intent"], r["slots"]) for r in hub_scored] == [(d.intent, d.slots) for d in want]
    assert [r["confidence"] for r in hub_scored] == pytest.approx([d.confidence for d in want], abs=2e-3)
    assert [r["confidence"] for r in hub_scored] != pytest.approx([r["confidence"] for r in hub], abs=2e-3)
    assert "lexicon.json: sha256" in refusals[0]["refused"]
    assert "lexicon.json" in refusals[1]["refused"] and "'music'" in refusals[1]["refused"]
    assert "decoder.gate" in refusals[2]["refused"]
    assert "decoder.scorer.features" in refusals[3]["refused"] and "loudness" in refusals[3]["refused"]


def test_write_bundle_refuses_a_decoder_for_a_student_without_a_phone_head(tmp_path: Path) -> None:
    (tmp_path / "context.yaml").write_text(CONTEXT)
    layout = HeadLayout.from_context(parse_context(CONTEXT))
    with pytest.raises(ConfigError, match="no phone CTC head"):
        write_bundle(tmp_path / "b", student=Student(head_sizes(layout), StudentConfig(channels=8, dilations=(1,))),
                     layout=layout, context_path=tmp_path / "context.yaml", threshold=0.5,
                     samples=[(speechlike(8000, 0), None)], decoder=SETTINGS)
    assert not (tmp_path / "b").exists()


def test_a_heads_only_bundle_of_a_ctc_student_has_no_ctc_output(tmp_path: Path) -> None:
    (tmp_path / "context.yaml").write_text(CONTEXT)
    student, layout = ctc_student(1)
    out = write_bundle(tmp_path / "b", student=student, layout=layout, context_path=tmp_path / "context.yaml",
                       threshold=0.0, samples=[(speechlike(8000, 0), None)], quantize="none")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "ctc" not in [o.name for o in session.get_outputs()]
    assert _manifest(out)["decoder"] is None and not (out / "lexicon.json").exists()
    assert student.ctc_head is not None  # the caller's student keeps its head
    assert read_wav(next((out / "samples").glob("*.wav"))).dtype == np.float32


def test_early_stop_on_a_grammar_bundle_asks_the_heads(folder: Path) -> None:
    from assistant.app import StreamConfidence
    from assistant.decode import decode

    recognizer = Recognizer(load_bundle(folder))
    early = StreamConfidence(recognizer, 0.0)
    audio = speechlike(16000, 5)
    sure = early.feed(audio)
    probs = early.stream.probs
    assert probs is not None
    heads = decode(recognizer.manifest.layout, probs[0], list(probs[1:]))
    assert sure == heads.understood  # threshold 0: confident whenever the heads understand something
    assert StreamConfidence(recognizer, 1.0).feed(audio) is False


def test_bench_times_the_grammar_decoding_as_the_hub_decides(folder: Path, tmp_path: Path) -> None:
    from distill.bench import _measure

    np.save(tmp_path / "clip.npy", speechlike(48000, 3))
    row = _measure({"kind": "onnx", "model": str(folder / "model.onnx"), "bundle": str(folder),
                    "clip": str(tmp_path / "clip.npy"), "runs": 5, "warmup": 1})
    assert row["torch_loaded"] is False and row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0
    # the worker times the network and the search as the hub runs them: the compiled search, on top of the network
    assert row["search"] == "c" and 0 < row["network_ms"]["p50"] <= row["latency_ms"]["p50"]
