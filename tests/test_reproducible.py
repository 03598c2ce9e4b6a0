"""Same seed, same study: the pipeline run twice from nothing gives the same corpus, the same
prepared arrays, the same weights and the same metrics, bit for bit; only timings differ.

The study here is a miniature of dvc.yaml's chain (corpus -> preprocess -> the flow network, the
expert, the judges -> two generators -> their evaluation), each stage run through the command line
as DVC runs it, below even the smoke profile's sizes: what it checks is that no stage draws from an
unseeded generator, the clock, or an order Python does not fix, not what the numbers say.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml

from opflowtalker.cli import main
from opflowtalker.models.checkpoints import load_safetensors

from conftest import EXTERNAL, study_params

# The keys of the study's JSON files (and checkpoints' metadata) that hold a clock's reading, not a
# result: a stage's or a training run's wall time (seconds), the lip reader's time to load its clips
# (load_seconds), and a flow network's time per pair in eval-flow (ms_per_pair). They differ from run
# to run by design; every other key must match exactly. (metrics/stage_times.json, all timings and
# finishing times, is written only in a folder holding dvc.yaml, so not here.)
TIMING_KEYS = frozenset({"seconds", "load_seconds", "ms_per_pair"})

# One thread in every stage of both runs: the thread count is part of what must match (the study
# chapter says why), and one thread is the cheapest on a shared machine.
THREADS = 1

# Smaller than profiles.smoke: 16 sentences (one validation clip), a step or two of every network.
MINIATURE = {
    "corpus": {"n_sentences": 16, "size": 96, "faces": str(EXTERNAL / "faces"), "workers": 1},
    "preprocess": {"workers": 1},
    "train_flow": {"steps": {"gma": 1, "raft": 1, "raft_small": 2, "flownet": 1}, "batch_size": 2, "train_pairs": 8,
                   "eval_pairs": 4, "pairs_per_clip": 4, "iters": 1, "eval_iters": 1, "threads": THREADS},
    "train_syncnet": {"steps": 2, "batch_size": 4, "eval_pairs": 8, "width": 0.25, "checkpoint_every": 1,
                      "log_every": 1, "threads": THREADS},
    "train_sync_judge": {"steps": 2, "batch_size": 4, "windows_per_clip": 2, "checkpoint_every": 1, "log_every": 1,
                         "eval_every": 1, "threads": THREADS},
    "train_lipreader": {"steps": 2, "decay_steps": 1, "batch_size": 4, "checkpoint_every": 1, "log_every": 1,
                        "eval_every": 1, "threads": THREADS},
    "generators": {"defaults": {"steps": 2, "batch_size": 2, "eval_windows": 2, "checkpoint_every": 1, "log_every": 1,
                                "flow_iters": 1, "mouth_start_step": 1, "width": 0.125, "threads": THREADS}},
    "evaluate": {"max_clips": 1, "landmark_frame_step": 8, "fd_frame_step": 8, "threads": THREADS},
}

GENERATORS = ("full", "wav2lip")


def run_study(root: Path) -> None:
    """The miniature study in ``root``, stage after stage, as dvc.yaml chains them."""
    root.mkdir(parents=True)
    params = study_params({**MINIATURE, "dataset": {"kind": "corpus", "root": str(root / "corpus")}})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(root / "params.yaml")]
    prepared = ["--prepared", str(root / "prepared")]
    judges = [*prepared, "--judge", str(root / "models/sync_judge.safetensors"),
              "--lipreader", str(root / "models/lipreader.safetensors"),
              "--reference", str(root / "eval/reference.npz"), *common]
    stages = [
        ["corpus", "--out", str(root / "corpus"), *common],
        ["preprocess", "--out", str(root / "prepared"), *common],
        ["train-flow", "raft_small", *prepared, "--out", str(root / "models/flow/raft_small.safetensors"),
         "--run-dir", str(root / "runs/flow"), *common],
        ["eval-flow", *prepared, "--checkpoint", f"raft_small={root / 'models/flow/raft_small.safetensors'}",
         "--out", str(root / "metrics/flow_epe.json"), *common],
        ["train-syncnet", *prepared, "--out", str(root / "models/syncnet.safetensors"),
         "--run-dir", str(root / "runs/syncnet"), *common],
        ["train-sync-judge", *prepared, "--out", str(root / "models/sync_judge.safetensors"),
         "--run-dir", str(root / "runs/sync_judge"), *common],
        ["train-lipreader", *prepared, "--out", str(root / "models/lipreader.safetensors"),
         "--run-dir", str(root / "runs/lipreader"), *common],
        *(["train-generator", name, *prepared, "--expert", str(root / "models/syncnet.safetensors"),
           "--flow-dir", str(root / "models/flow"), "--out", str(root / f"models/generators/{name}.safetensors"),
           "--run-dir", str(root / f"runs/{name}"), *common] for name in GENERATORS),
        ["evaluate-reference", *judges, "--expert", str(root / "models/syncnet.safetensors"),
         "--out", str(root / "metrics/controls")],
        *(["evaluate", name, "--checkpoint", str(root / f"models/generators/{name}.safetensors"), *judges,
           "--out", str(root / f"metrics/generators/{name}.json"), "--frames", str(root / f"frames/{name}.npz")]
          for name in GENERATORS),
    ]
    for argv in stages:
        assert main(argv) == 0, argv


def without_timings(value):
    """``value`` (parsed JSON) with every key of TIMING_KEYS left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def outputs(root: Path) -> list[Path]:
    """Every file the study wrote, relative to ``root``; the run folders aside (resume states and
    dvclive's logs, which DVC does not track)."""
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and "runs" not in p.relative_to(root).parts)


def differences(first, second, where: str = "") -> list[str]:
    """The paths (``a/b[2]``) at which two parsed JSON values differ."""
    if isinstance(first, dict) and isinstance(second, dict):
        return [d for key in sorted(first.keys() | second.keys(), key=str)
                for d in (differences(first[key], second[key], f"{where}/{key}") if key in first and key in second
                          else [f"{where}/{key}"])]
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        return [d for i, (a, b) in enumerate(zip(first, second)) for d in differences(a, b, f"{where}[{i}]")]
    same = first == second or (isinstance(first, float) and isinstance(second, float)
                               and math.isnan(first) and math.isnan(second))  # a score of no clips
    return [] if same else [where or "/"]


def file_differences(a: Path, b: Path, name: Path) -> list[str]:
    """What differs between ``a / name`` and ``b / name``: JSON without its timings key by key,
    every tensor of a checkpoint and every array of an archive bit for bit, any other file byte for
    byte. Empty when they hold the same results."""
    first, second = a / name, b / name
    if name.suffix == ".json":
        return differences(*(without_timings(json.loads(path.read_text())) for path in (first, second)))
    if name.suffix == ".safetensors":
        (tensors, meta), (tensors_b, meta_b) = load_safetensors(first), load_safetensors(second)
        found = [f"metadata{d}" for d in differences(without_timings(meta), without_timings(meta_b))]
        for key in sorted(tensors.keys() | tensors_b.keys()):
            x, y = tensors.get(key), tensors_b.get(key)
            # As bytes, so that a NaN equals itself and -0.0 differs from 0.0.
            if x is None or y is None or x.dtype != y.dtype or x.shape != y.shape or not torch.equal(
                    x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
                found.append(key)
        return found
    if name.suffix in (".npz", ".npy"):
        with np.load(first) as arrays, np.load(second) as arrays_b:
            keys = sorted(set(arrays.files) | set(arrays_b.files))
            return [key for key in keys if key not in arrays.files or key not in arrays_b.files
                    or arrays[key].dtype != arrays_b[key].dtype or arrays[key].tobytes() != arrays_b[key].tobytes()]
    if name.name == "params.yaml":  # each names its own folder
        return []
    return [] if first.read_bytes() == second.read_bytes() else ["bytes"]


def assert_same_study(a: Path, b: Path) -> None:
    """The studies in ``a`` and ``b`` wrote the same files with the same results."""
    names = outputs(a)
    assert names == outputs(b)
    differ = {str(name): found[:5] for name in names if (found := file_differences(a, b, name))}
    assert not differ, "outputs that differ (first keys): " + json.dumps(differ, indent=1)


def test_the_same_seed_gives_the_same_study_bit_for_bit(tmp_path):
    # Both runs in one process: a stage that leaned on the global random state the first run left
    # behind would differ here, as it could under DVC when stages run in another order.
    run_study(tmp_path / "a")
    run_study(tmp_path / "b")
    names = {str(name) for name in outputs(tmp_path / "a")}
    # What is compared: the corpus's and the prepared clips' arrays, every checkpoint, every metric.
    assert {"corpus/corpus.json", "prepared/train.txt", "eval/reference.npz", "metrics/flow_epe.json",
            "metrics/controls/ground_truth.json", "metrics/generators/full.json", "models/lipreader.safetensors",
            "models/flow/raft_small.safetensors", "models/generators/wav2lip.safetensors"} <= names
    assert sum(name.startswith("prepared/") and name.endswith(".npz") for name in names) == 16
    assert_same_study(tmp_path / "a", tmp_path / "b")
