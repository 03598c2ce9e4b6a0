"""`kill -9` at a random moment of a stage, then the same command again, at the smoke scale.

Training stages (SyncNet, the sync judge, the lip reader, a generator, a flow network) resume from
their last checkpoint and end with weights bit-identical to a run that was never killed. The
stages that write data (corpus, preprocess, evaluate) leave nothing a rerun would trust, and the
rerun completes with the output of a run that was never killed.

A kill point is drawn by a seeded generator per stage: the training checkpoint (or, for the data
stages, the number of finished items) to wait for, then a further delay of up to a few hundred
milliseconds, so the kill lands anywhere in a step, a checkpoint's write or an item.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from opflowtalker.models.checkpoints import load_safetensors
from opflowtalker.params import merge

from conftest import ROOT, resume_step, study_params

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
STEPS = 10  # every training stage: steps, checkpointing after each


def _smoke_params(overrides: dict) -> dict:
    smoke = yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"]["smoke"]
    return study_params(merge({k: v for k, v in smoke.items() if k != "hd"}, overrides))


TRAINING = {"checkpoint_every": 1, "log_every": 1, "steps": STEPS}
PARAMS = _smoke_params({
    "corpus": {"n_sentences": 24, "size": 96, "workers": 2, "faces": str(ROOT / "data" / "external" / "faces")},
    "preprocess": {"workers": 2},
    "train_syncnet": {**TRAINING, "width": 0.125},
    "train_sync_judge": {**TRAINING, "eval_every": STEPS},
    "train_lipreader": {**TRAINING, "decay_steps": 2, "eval_every": STEPS},
    "train_flow": {"steps": {"raft_small": STEPS}, "checkpoint_every": 1, "log_every": 1},
    "generators": {"defaults": {**TRAINING, "width": 0.0625, "flow_network": "raft_small", "mouth_start_step": 1}},
    "evaluate": {"max_clips": 3},
})


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "opflowtalker.cli", *map(str, args)]


def _run(study: Path, *args) -> None:
    proc = subprocess.run(_cli(*args), cwd=study, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study folder at the smoke scale: the corpus, its crops, an expert, a flow network, a sync
    judge, a lip reader and the reference row, each trained for one step (what the killed stages read)."""
    root = tmp_path_factory.mktemp("study")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    one = merge(PARAMS, {"train_syncnet": {"steps": 1}, "train_sync_judge": {"steps": 1, "eval_every": 1},
                         "train_lipreader": {"steps": 1, "decay_steps": 0, "eval_every": 1}})
    one = merge(one, {"train_flow": {"steps": {"raft_small": 1}}})
    (root / "one_step.yaml").write_text(yaml.safe_dump(one))
    _run(root, "corpus", "--out", "data/corpus")
    _run(root, "preprocess", "--out", "data/prepared")
    for args in (("train-syncnet", "--out", "models/syncnet.safetensors", "--run-dir", "runs/one/syncnet"),
                 ("train-flow", "raft_small", "--out", "models/flow/raft_small.safetensors", "--run-dir",
                  "runs/one/flow"),
                 ("train-sync-judge", "--out", "models/sync_judge.safetensors", "--run-dir", "runs/one/judge"),
                 ("train-lipreader", "--out", "models/lipreader.safetensors", "--run-dir", "runs/one/lipreader")):
        _run(root, *args, "--params", "one_step.yaml")
    _run(root, "evaluate-reference", "--out", "metrics/controls")
    return root


def _resume_step(run_dir: Path) -> int:
    return resume_step(run_dir / "resume.safetensors") or 0


def _kill_when(study: Path, args: list, ready, rng: np.random.Generator, what: str, within: float = 0.3,
               too_late=lambda: False) -> None:
    """Start ``args``, wait until ``ready()`` holds, wait a further random moment of up to
    ``within`` seconds (cut short once ``too_late()`` holds, so the kill still lands mid-run
    however long a step takes), and kill -9.
    Its stderr goes to a file: a pipe would stay open as long as any worker it started lives."""
    errors = study / "killtest" / f"{what}.stderr"
    errors.parent.mkdir(parents=True, exist_ok=True)
    with open(errors, "wb") as stderr:
        proc = subprocess.Popen(_cli(*args), cwd=study, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and not ready():
            assert time.monotonic() < deadline, f"{what} never reached its kill point"
            time.sleep(0.005)
        until = time.monotonic() + rng.uniform(0.0, within)
        while proc.poll() is None and time.monotonic() < until and not too_late():
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    message = errors.read_text(errors="replace")[-2000:]
    errors.unlink()
    assert proc.returncode == -signal.SIGKILL, f"{what} ended (status {proc.returncode}) before the kill: {message}"


def _same_tensors(a: Path, b: Path) -> None:
    (wa, _), (wb, _) = load_safetensors(a), load_safetensors(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not (wa[k].dtype == wb[k].dtype and wa[k].shape == wb[k].shape
                                        and bool((wa[k] == wb[k]).all()))]
    assert not different, f"{len(different)} tensors differ, such as {different[0]}"


TRAINING_STAGES = {
    "syncnet": ["train-syncnet"],
    "sync_judge": ["train-sync-judge"],
    "lipreader": ["train-lipreader"],
    "generator": ["train-generator", "full", "--expert", "models/syncnet.safetensors", "--flow-dir", "models/flow"],
    "flow": ["train-flow", "raft_small"],
}


@pytest.mark.parametrize("stage", list(TRAINING_STAGES))
def test_a_training_stage_killed_at_a_random_step_resumes_to_the_weights_of_one_never_killed(study, stage):
    rng = np.random.default_rng(zlib.crc32(stage.encode()))
    command = TRAINING_STAGES[stage]
    whole = Path("killtest") / stage / "whole"
    killed = Path("killtest") / stage / "killed"
    _run(study, *command, "--out", whole / "model.safetensors", "--run-dir", whole / "run")

    kill_at = int(rng.integers(1, STEPS - 2))
    step_seconds = json.loads((study / whole / "model.json").read_text())["seconds"] / STEPS
    args = [*command, "--out", killed / "model.safetensors", "--run-dir", killed / "run"]
    # Killed within the step after the checkpoint of step kill_at: anywhere in a step or a write.
    _kill_when(study, args, lambda: _resume_step(study / killed / "run") >= kill_at, rng, stage, step_seconds,
               too_late=lambda: _resume_step(study / killed / "run") > kill_at)
    resumed_from = _resume_step(study / killed / "run")
    assert kill_at <= resumed_from < STEPS, "the kill must land in the middle of the run"
    assert not (study / killed / "model.safetensors").exists(), "a killed run left a final checkpoint"

    _run(study, *args)
    _same_tensors(study / whole / "model.safetensors", study / killed / "model.safetensors")
    log = json.loads((study / killed / "model.json").read_text())
    assert log["resumed_from"] == resumed_from and log["steps"] == STEPS


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _litter(folder: Path) -> list[str]:
    """What a finished run would not leave in ``folder`` or beside it: its staging folders and
    temporary files."""
    inside = [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    beside = list(folder.parent.glob(f".{folder.name}-*"))
    return sorted(str(p) for p in inside + beside)


def _stable(row: dict) -> dict:
    """A metrics row without its timings (wall time is the one thing a rerun may change)."""
    return {k: (_stable(v) if isinstance(v, dict) else v) for k, v in row.items() if k not in ("seconds",)}


def test_a_corpus_killed_midway_leaves_no_corpus_and_a_rerun_renders_the_same_one(study):
    rng = np.random.default_rng(1)
    out = study / "killtest" / "corpus"
    staging = lambda: [p for p in out.parent.glob(".corpus-*") if p.is_dir()]
    clips_at = int(rng.integers(2, 12))
    _kill_when(study, ["corpus", "--out", out],
               lambda: sum(len(list(s.rglob("*.json"))) for s in staging()) >= clips_at, rng, "corpus")
    assert not out.exists(), "a killed corpus build left a corpus folder"
    _run(study, "corpus", "--out", out)
    assert not _litter(out), _litter(out)
    assert _digests(out) == _digests(study / "data" / "corpus")


def test_preprocessing_killed_midway_leaves_only_whole_clips_and_a_rerun_completes_them(study):
    rng = np.random.default_rng(2)
    out = study / "killtest" / "prepared"
    done_at = int(rng.integers(2, 12))
    _kill_when(study, ["preprocess", "--out", out], lambda: len(list(out.rglob("*.npz"))) >= done_at, rng,
               "preprocess")
    assert not list(out.glob("*.txt")), "a killed run listed its clips as if it had finished"
    for npz in out.rglob("*.npz"):  # every clip left behind is whole
        with np.load(npz) as data:
            assert {"faces", "mel", "landmarks"} <= set(data.files)
    _run(study, "preprocess", "--out", out)
    assert not _litter(out), _litter(out)
    whole = study / "data" / "prepared"
    assert _digests(out).keys() == _digests(whole).keys()
    for name in _digests(whole):
        if name.endswith(".npz"):
            with np.load(out / name) as a, np.load(whole / name) as b:
                assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), name
        else:
            assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def test_an_evaluation_killed_midway_writes_no_row_and_a_rerun_scores_as_one_never_killed(study):
    rng = np.random.default_rng(3)
    args = ["evaluate", "full", "--checkpoint", "killtest/generator/whole/model.safetensors"]
    whole, killed = study / "killtest" / "eval" / "whole.json", study / "killtest" / "eval" / "killed.json"
    if not (study / args[-1]).is_file():
        _run(study, "train-generator", "full", "--expert", "models/syncnet.safetensors", "--flow-dir", "models/flow",
             "--out", args[-1], "--run-dir", "killtest/generator/whole/run")
    started = time.monotonic()
    _run(study, *args, "--out", whole)
    took = time.monotonic() - started
    begun, kill_after = time.monotonic(), rng.uniform(0.3, 0.8) * took
    _kill_when(study, [*args, "--out", killed], lambda: time.monotonic() - begun > kill_after, rng, "evaluate")
    assert not killed.exists(), "a killed evaluation wrote its row"
    _run(study, *args, "--out", killed)
    assert not _litter(killed.parent), _litter(killed.parent)
    assert _stable(json.loads(killed.read_text())) == _stable(json.loads(whole.read_text()))
