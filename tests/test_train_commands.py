"""The training commands DVC runs are the ones torchrun runs: `opflowtalker train-syncnet` on 2 gloo processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import yaml

from opflowtalker.models.checkpoints import load_model_checkpoint


def _prepared(root, n_clips=4, frames=12, size=96):
    rng = np.random.default_rng(0)
    keys = []
    for i in range(n_clips):
        key = f"person/{i:05d}"
        (root / "person").mkdir(parents=True, exist_ok=True)
        landmarks = np.tile(np.array([[48.0, 60.0]], np.float32), (frames, 68, 1))
        np.savez(root / f"{key}.npz", faces=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
                 mel=rng.normal(size=(80, 16 + 4 * frames)).astype(np.float32), landmarks=landmarks,
                 fps=np.float32(25.0))
        keys.append(key)
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("\n".join(keys) + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_syncnet_under_torchrun_trains_one_model_on_two_processes(tmp_path):
    _prepared(tmp_path / "prepared")
    params = {"train_syncnet": {"steps": 3, "batch_size": 4, "width": 0.125, "eval_pairs": 4, "checkpoint_every": 2,
                                "log_every": 1, "threads": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "syncnet.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), "-m", "opflowtalker.cli", "train-syncnet", "--prepared",
                          str(tmp_path / "prepared"), "--out", str(out), "--run-dir", str(tmp_path / "run"),
                          "--params", str(tmp_path / "params.yaml")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 3 and log["history"]["step"] == [1, 2, 3]
    model = load_model_checkpoint(out)
    assert type(model).__name__ == "SyncNet" and model.config == {"width": 0.125}
    assert (tmp_path / "run" / "resume.safetensors").is_file() and (tmp_path / "run" / "live").is_dir()
