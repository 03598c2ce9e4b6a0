"""The training commands DVC runs are the ones torchrun runs: `opflowtalker train-syncnet` on 2 gloo processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import yaml

from opflowtalker.models.registry import load_model_checkpoint

from conftest import study_params


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
    params = study_params({"train_syncnet": {"steps": 3, "batch_size": 4, "width": 0.125, "eval_pairs": 4,
                                             "checkpoint_every": 2, "log_every": 1, "threads": 1}})
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


def _generator_params(tmp_path, loss_variants):
    params = study_params()
    params["generators"] = {
        "defaults": {**params["generators"]["defaults"], "width": 0.0625, "steps": 4, "batch_size": 2,
                     "ofs_weight": 0.0, "sync_weight": 0.0, "mouth_weight": 1.0, "eval_windows": 2,
                     "checkpoint_every": 2, "log_every": 1, "threads": 1},
        "variants": {"full": {}},
        "warm_up": {"steps": 2, "variants": ["full"]},
        "loss_variants": loss_variants}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _train(tmp_path, variant, out, *extra):
    from opflowtalker.cli import main

    return main(["train-generator", variant, "--prepared", str(tmp_path / "prepared"), "--out", str(out),
                 "--run-dir", str(tmp_path / "runs" / out.stem), "--params", str(tmp_path / "params.yaml"), *extra])


def test_a_loss_variant_continues_the_warm_up_of_its_variant_with_its_own_loss(tmp_path):
    from opflowtalker.models.checkpoints import load_safetensors

    _prepared(tmp_path / "prepared")
    _generator_params(tmp_path, {"same": {"mouth_weight": 1.0, "warm_start": "full"},
                                 "heavier": {"mouth_weight": 5.0, "warm_start": "full"}})
    models = tmp_path / "models"
    assert _train(tmp_path, "full", models / "full.safetensors") == 0
    warm = models / "warm" / "full.safetensors"
    assert _train(tmp_path, "full", warm, "--warm-up") == 0
    for name in ("same", "heavier"):
        assert _train(tmp_path, name, models / f"{name}.safetensors", "--warm-start", str(warm)) == 0

    full, _ = load_safetensors(models / "full.safetensors")
    same, same_meta = load_safetensors(models / "same.safetensors")
    heavier, _ = load_safetensors(models / "heavier.safetensors")
    # The warm-up is the full model's own first two steps: going on with the same loss ends where
    # the full model ends, bit for bit; another loss ends elsewhere.
    assert all(torch_equal(full[k], same[k]) for k in full)
    assert not all(torch_equal(full[k], heavier[k]) for k in full)
    assert same_meta["warm_start"] == {"variant": "full", "steps": 2}
    log = json.loads((models / "heavier.json").read_text())
    warm_log = json.loads(warm.with_suffix(".json").read_text())
    assert log["resumed_from"] == 2 and log["warm_start"]["steps"] == 2
    assert log["history"]["step"] == [1, 2, 3, 4] and log["history"]["l1"][:2] == warm_log["history"]["l1"]

    # Trained on from its own checkpoint, a loss variant still says where its first steps came from.
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["generators"]["defaults"]["steps"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert _train(tmp_path, "heavier", models / "heavier.safetensors", "--warm-start", str(warm)) == 0
    longer = json.loads((models / "heavier.json").read_text())
    assert longer["resumed_from"] == 4 and longer["warm_start"] == log["warm_start"]


def test_a_loss_variant_that_changes_more_than_its_loss_is_refused_in_one_line(tmp_path, capsys):
    _prepared(tmp_path / "prepared")
    _generator_params(tmp_path, {"wider": {"width": 0.125, "warm_start": "full"},
                                 "orphan": {"mouth_weight": 2.0},
                                 "fine": {"mouth_weight": 2.0, "warm_start": "full"}})
    models = tmp_path / "models"
    assert _train(tmp_path, "wider", models / "wider.safetensors", "--warm-start", str(models / "w.safetensors")) == 2
    assert "may change only its loss" in capsys.readouterr().err
    assert _train(tmp_path, "orphan", models / "orphan.safetensors") == 2
    assert "names no warm_start" in capsys.readouterr().err
    assert _train(tmp_path, "fine", models / "fine.safetensors") == 2  # no --warm-start given
    assert "give --warm-start" in capsys.readouterr().err
    assert _train(tmp_path, "fine", models / "fine.safetensors", "--warm-start", str(models / "none.safetensors")) == 2
    assert "run `dvc repro warm_up@full` first" in capsys.readouterr().err
    assert not (models / "fine.safetensors").exists()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
