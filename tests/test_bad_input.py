"""Bad input to `opflowtalker generate` and to every stage: refused before any work, in one line
that names what was wrong and what it accepts, with exit status 2 and nothing written.

Each case runs the command line in a fresh folder that holds only its inputs; the folder must hold
exactly those files afterwards. A case whose refusal came late (after writing) or as a traceback
fails: a traceback escapes ``main`` and fails the test, and a half-written file changes the folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from opflowtalker.cli import main
from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig

from conftest import EXTERNAL, study_params

PHOTO = EXTERNAL / "faces" / "hopper.png"
SPEECH = EXTERNAL / "speech" / "Front_Center.wav"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.0625)), path)
    return path


class World:
    """The folder a case runs in and the inputs it may make there."""

    def __init__(self, root: Path, checkpoint: Path):
        self.root, self.checkpoint = root, checkpoint

    def generate(self, *extra: str, face: Path = PHOTO, audio: Path = SPEECH, checkpoint: Path | None = None,
                 outfile: str = "out.mp4") -> list[str]:
        return ["generate", "--face", str(face), "--audio", str(audio),
                "--checkpoint", str(checkpoint or self.checkpoint), "--outfile", outfile, "--quiet", *extra]

    def params(self, overrides: dict, name: str = "params.yaml") -> str:
        path = self.root / name
        path.write_text(yaml.safe_dump(study_params(overrides)))
        return str(path)

    def file(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def wav(self, name: str, samples: np.ndarray) -> Path:
        path = self.root / name
        soundfile.write(path, samples.astype(np.float32), 16000)
        return path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True)
        return path


def _malicious_pth(world: World) -> Path:
    class Payload:
        def __reduce__(self):
            return (open, (str(world.root / "PWNED"), "w"))

    path = world.root / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    return path


# (id, the command line built in the case's folder, what its one line must say)
CASES = [
    # generate: options out of range or of the wrong kind
    ("generate --fps -5", lambda w: w.generate("--fps", "-5"), "argument --fps: takes a frame rate"),
    ("generate --fps 0", lambda w: w.generate("--fps", "0"), "argument --fps: takes a frame rate"),
    ("generate --fps abc", lambda w: w.generate("--fps", "abc"), "argument --fps: takes a frame rate"),
    ("generate --batch_size 0", lambda w: w.generate("--batch_size", "0"),
     "argument --batch_size/--wav2lip_batch_size: takes windows per forward pass, a whole number of 1 or more"),
    ("generate --resize_factor 0", lambda w: w.generate("--resize_factor", "0"),
     "argument --resize_factor: takes the factor the frames shrink by, a whole number of 1 or more"),
    ("generate --resize_factor 1.5", lambda w: w.generate("--resize_factor", "1.5"), "argument --resize_factor"),
    ("generate --pads with three numbers", lambda w: w.generate("--pads", "0", "10", "0"),
     "argument --pads: expected 4 arguments"),
    ("generate --pads negative", lambda w: w.generate("--pads", "0", "-10", "0", "0"), "pads takes pixel counts of 0"),
    ("generate --box upside down", lambda w: w.generate("--box", "90", "10", "0", "50"), "box takes pixels with 0 <= top"),
    ("generate --crop empty", lambda w: w.generate("--crop", "50", "20", "0", "-1"), "crop takes 0 <= top < bottom"),
    ("generate --precision fp16", lambda w: w.generate("--precision", "fp16"), "argument --precision: invalid choice"),
    ("generate --outfile not mp4", lambda w: w.generate(outfile="out.avi"), "does not end in .mp4"),
    # generate: files that are missing or are not what they claim
    ("generate face missing", lambda w: w.generate(face=w.root / "none.mp4"), "face file not found"),
    ("generate audio missing", lambda w: w.generate(audio=w.root / "none.wav"), "audio file not found"),
    ("generate checkpoint missing", lambda w: w.generate(checkpoint=w.root / "none.safetensors"), "checkpoint not found"),
    ("generate face is text", lambda w: w.generate(face=w.file("face.mp4", b"not a video" * 50)), "face.mp4"),
    ("generate audio silent", lambda w: w.generate(audio=w.wav("silent.wav", np.zeros(16000))), "is silent"),
    ("generate checkpoint corrupt", lambda w: w.generate(checkpoint=w.file("bad.safetensors", b"\x00" * 64)),
     "bad.safetensors"),
    ("generate checkpoint pickled code", lambda w: w.generate(checkpoint=_malicious_pth(w)), "was not unpickled"),
    # the study's parameters out of range, of the wrong type, or naming what does not exist
    ("params: unknown profile", lambda w: ["train-syncnet", "--params", w.params({"profile": "nope", "profiles": {}})],
     "profile 'nope' is not one of the profiles"),
    ("params: not YAML", lambda w: ["corpus", "--params", str(w.file("params.yaml", b"corpus: [unclosed"))],
     "is not valid YAML"),
    ("train_syncnet.steps 0", lambda w: ["train-syncnet", "--params", w.params({"train_syncnet": {"steps": 0}})],
     "params.yaml: train_syncnet: steps must be above 0, got 0"),
    ("train_syncnet.batch_size -4",
     lambda w: ["train-syncnet", "--params", w.params({"train_syncnet": {"batch_size": -4}})],
     "train_syncnet: batch_size must be above 0, got -4"),
    ("train_syncnet.lr a string", lambda w: ["train-syncnet", "--params", w.params({"train_syncnet": {"lr": "fast"}})],
     "train_syncnet: lr takes a number, got 'fast'"),
    ("train_sync_judge.flip 1.5",
     lambda w: ["train-sync-judge", "--params", w.params({"train_sync_judge": {"flip": 1.5}})],
     "train_sync_judge: flip must be a share between 0 and 1, got 1.5"),
    ("train_lipreader.tokens phonemes",
     lambda w: ["train-lipreader", "--params", w.params({"train_lipreader": {"tokens": "phonemes"}})],
     "train_lipreader: tokens must be one of words, characters, got 'phonemes'"),
    ("train_flow.lr 0", lambda w: ["train-flow", "raft", "--out", "raft.safetensors",
                                   "--params", w.params({"train_flow": {"lr": 0}})],
     "train_flow: lr must be above 0, got 0"),
    ("train_flow.steps.raft -1", lambda w: ["train-flow", "raft", "--out", "raft.safetensors",
                                            "--params", w.params({"train_flow": {"steps": {"raft": -1}}})],
     "steps of raft must be a whole number above 0, got -1"),
    ("train-flow unknown network", lambda w: ["train-flow", "pwcnet", "--out", "pwc.safetensors"],
     "argument network: invalid choice: 'pwcnet'"),
    ("eval-flow unknown network",
     lambda w: ["eval-flow", "--checkpoint", "pwcnet=pwc.safetensors", "--params", w.params({})],
     "--checkpoint names 'pwcnet', which is not a flow network"),
    ("eval-flow malformed checkpoint", lambda w: ["eval-flow", "--checkpoint", "raft", "--params", w.params({})],
     "--checkpoint takes NAME=PATH"),
    ("train-generator unknown variant",
     lambda w: ["train-generator", "nope", "--out", "g.safetensors", "--params", w.params({})], "nope"),
    ("generators flow_network pwc",
     lambda w: ["train-generator", "full", "--out", "g.safetensors",
                "--params", w.params({"generators": {"defaults": {"flow_network": "pwc"}}})],
     "flow_network must be one of gma, raft, raft_small, flownet, got 'pwc'"),
    ("generators batch_size 0",
     lambda w: ["train-generator", "full", "--out", "g.safetensors",
                "--params", w.params({"generators": {"defaults": {"batch_size": 0}}})],
     "batch_size must be above 0, got 0"),
    ("corpus.n_sentences 0", lambda w: ["corpus", "--out", "corpus", "--params", w.params({"corpus": {"n_sentences": 0}})],
     "params.yaml: corpus: n_sentences must be above 0, got 0"),
    ("corpus.fps -25", lambda w: ["corpus", "--out", "corpus", "--params", w.params({"corpus": {"fps": -25}})],
     "corpus: fps must be above 0, got -25"),
    ("corpus unknown voice",
     lambda w: ["corpus", "--out", "corpus",
                "--params", w.params({"corpus": {"identities": {"woman": ["nobody"], "hopper": ["piper-joe"]},
                                                 "test_identity": "woman"}})],
     "Unknown voice 'nobody'"),
    ("corpus test identity missing",
     lambda w: ["corpus", "--out", "corpus", "--params", w.params({"corpus": {"test_identity": "ghost"}})],
     "test identity 'ghost' is not among the identities"),
    ("preprocess.size 8", lambda w: ["preprocess", "--out", "prepared", "--params", w.params({"preprocess": {"size": 8}})],
     "crop size must be between 16 and 1024 pixels"),
    ("preprocess LRS2 root without its layout",
     lambda w: ["preprocess", "--out", "prepared",
                "--params", w.params({"dataset": {"kind": "lrs2", "root": str(w.folder("lrs2"))}})], "lrs2"),
    ("preprocess corpus root without corpus",
     lambda w: ["preprocess", "--out", "prepared",
                "--params", w.params({"dataset": {"kind": "corpus", "root": str(w.folder("corpus"))}})], "corpus"),
    ("evaluate unknown variant",
     lambda w: ["evaluate", "nope", "--checkpoint", str(w.checkpoint), "--out", "nope.json", "--params", w.params({})],
     "no generator variant 'nope'"),
    ("evaluate.split dev",
     lambda w: ["evaluate", "full", "--checkpoint", str(w.checkpoint), "--out", "full.json",
                "--params", w.params({"evaluate": {"split": "dev"}})],
     "evaluate: split must be one of train, val, test, got 'dev'"),
    ("evaluate.landmark_frame_step 0",
     lambda w: ["evaluate", "full", "--checkpoint", str(w.checkpoint), "--out", "full.json",
                "--params", w.params({"evaluate": {"landmark_frame_step": 0}})],
     "landmark_frame_step must be above 0, got 0"),
    ("model_cost.repeats 0", lambda w: ["model-cost", "--out", "cost.json",
                                        "--params", w.params({"model_cost": {"repeats": 0}})],
     "model_cost: repeats must be above 0, got 0"),
    ("model_cost unknown key", lambda w: ["model-cost", "--out", "cost.json",
                                          "--params", w.params({"model_cost": {"speed": 2}})],
     "unknown parameter(s) speed in params.yaml: model_cost"),
    ("corpus-quality --min-motion -1", lambda w: ["corpus-quality", "--min-motion", "-1", "--out", "q.json"],
     "--min-motion takes a distance in pixels, 0 or more"),
    ("explorer-shot --timeout 0", lambda w: ["explorer-shot", "--timeout", "0", "--out", "shot.png"],
     "argument --timeout: takes seconds to wait, a number above 0"),
    ("notebook missing", lambda w: ["notebook", "missing.ipynb", "out.ipynb", "--params", w.params({})],
     "notebook not found"),
]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_dir()}


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse refuses an option
        return exit.code


@pytest.mark.parametrize("make, expected", [pytest.param(make, expected, id=name) for name, make, expected in CASES])
def test_bad_input_is_refused_in_one_line_naming_it_with_exit_2_and_nothing_written(
        make, expected, checkpoint, tmp_path, monkeypatch, capsys):
    world = World(tmp_path, checkpoint)
    monkeypatch.chdir(tmp_path)
    argv = make(world)
    before = _files(tmp_path)
    capsys.readouterr()
    code = _run(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"opflowtalker {argv[0]}: error: ") and expected in lines[0], lines[0]
    assert _files(tmp_path) == before, "a refused command wrote or changed files"


def test_the_cases_are_at_least_25_across_generate_and_ten_stages(checkpoint, tmp_path):
    commands = []
    for k, (_, make, _) in enumerate(CASES):
        (tmp_path / str(k)).mkdir()
        commands.append(make(World(tmp_path / str(k), checkpoint))[0])
    assert len(CASES) >= 25 and commands.count("generate") >= 15
    assert len(set(commands) - {"generate"}) >= 10, sorted(set(commands))
