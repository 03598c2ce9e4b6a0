"""Nothing a user hands the package is unpickled: every loader of a weight or checkpoint file
refuses one whose pickle would run code, in one line naming the file, without running it.

Each case writes a checkpoint whose payload would create a marker file when unpickled, under the
name its loader expects, passes it where a user's path goes, and checks that the loader refused
it, that the marker is not there, and that the payload is live (an ordinary unpickle creates it).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from opflowtalker import assets
from opflowtalker.cli import main
from opflowtalker.errors import OpFlowTalkerError

from conftest import EXTERNAL, unpickle_unsafely, write_trojan

PTH = ("zip", "legacy")  # the two layouts torch.save writes, as public .pth files come in
OURS = ("pickle", "zip")  # a file named .safetensors that is a pickle


def _generate(path: Path, tmp_path: Path) -> None:
    """``opflowtalker generate --checkpoint path``: the message the CLI prints, raised."""
    _cli(["generate", "--face", str(assets.portrait_path("hopper", EXTERNAL)),
          "--audio", str(assets.speech_path("Front_Center", EXTERNAL)), "--checkpoint", str(path),
          "--outfile", str(tmp_path / "out.mp4"), "--quiet"])


def _landmarks(path: Path, tmp_path: Path) -> None:
    """``opflowtalker landmarks image --backend face_alignment`` with face-alignment's two weight
    files in the torch hub cache, ``path`` the malicious one and the other a real state dict."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from opflowtalker.landmarks import face_alignment_weight_paths

    paths = face_alignment_weight_paths()
    for key, network in (("detector", s3fd), ("landmarks", lambda: FAN(4))):
        if paths[key] != path:
            torch.save(network().state_dict(), paths[key])
    _cli(["landmarks", str(assets.portrait_path("hopper", EXTERNAL)), "--backend", "face_alignment"])


class _CliError(OpFlowTalkerError):
    """What the CLI printed for a refused command (it exits 2 after one line on stderr)."""


def _cli(argv: list[str]) -> None:
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(argv)
    lines = stderr.getvalue().splitlines()
    assert status == 2 and len(lines) == 1, (status, lines)
    raise _CliError(lines[0])


def _wav2lip(path, tmp_path):
    from opflowtalker.models.registry import load_wav2lip

    load_wav2lip(path)


def _syncnet(path, tmp_path):
    from opflowtalker.models.registry import load_syncnet

    load_syncnet(path)


def _flow(arch: str) -> Callable[[Path, Path], None]:
    def load(path, tmp_path):
        from opflowtalker.flow.checkpoints import load_flow_checkpoint

        load_flow_checkpoint(path, arch)
    return load


def _flownet(path, tmp_path):
    from opflowtalker.flow.flownet import load_flownet_checkpoint

    load_flownet_checkpoint(path)


def _trained_flow(path, tmp_path):
    from opflowtalker.flow.checkpoints import load_trained_network

    load_trained_network(path)


def _syncnet_v2(path, tmp_path):
    from opflowtalker.metrics.sync import load_syncnet_v2

    load_syncnet_v2(path)


def _fid(path, tmp_path):
    from opflowtalker.metrics.fid import inception_fid

    images = np.zeros((2, 64, 64, 3), np.uint8)
    inception_fid(images, images, weights_path=path)


def _lpips(path, tmp_path):
    """lpips_distance with ``path`` as one of its two files and a real state dict as the other."""
    from opflowtalker.metrics.lpips import ALEXNET_WEIGHTS_FILE, LPIPS, lpips_distance

    backbone, linear = tmp_path / ALEXNET_WEIGHTS_FILE, tmp_path / "alex.pth"
    if path == linear:
        torch.save(LPIPS().net.state_dict(), backbone)
    else:
        linear.write_bytes(b"")
    images = np.zeros((1, 64, 64, 3), np.uint8)
    lpips_distance(images, images, backbone_path=backbone, linear_path=linear)


def _lipreader(path, tmp_path):
    from opflowtalker.models.lipreader import load_lipreader

    load_lipreader(path)


def _sync_judge(path, tmp_path):
    from opflowtalker.models.sync_judge import load_sync_judge

    load_sync_judge(path)


def _warm_start(path, tmp_path):
    from opflowtalker.training.state import read_state

    read_state(path)


@dataclass(frozen=True)
class Loader:
    name: str
    file: str  # the name a user's file has, under the torch hub cache for face-alignment's
    load: Callable[[Path, Path], None]  # raises the project's error for the file
    layouts: tuple[str, ...]


LOADERS = [
    Loader("generate with one of our generators", "generator.safetensors", _generate, OURS),
    Loader("generate with Wav2Lip's generator", "wav2lip.pth", _generate, PTH),
    Loader("Wav2Lip's generator", "wav2lip_gan.pth", _wav2lip, PTH),
    Loader("Wav2Lip's SyncNet", "lipsync_expert.pth", _syncnet, PTH),
    Loader("GMA", "gma-things.pth", _flow("gma"), PTH),
    Loader("RAFT", "raft-things.pth", _flow("raft"), PTH),
    Loader("RAFT-small", "raft-small.pth", _flow("raft-small"), PTH),
    Loader("FlowNet2-S", "FlowNet2-S_checkpoint.pth.tar", _flownet, PTH),
    Loader("our flow network", "gma.safetensors", _trained_flow, OURS),
    Loader("syncnet_python", "syncnet_v2.model", _syncnet_v2, PTH),
    Loader("FID Inception", "pt_inception-2015-12-05-6726825d.pth", _fid, PTH),
    Loader("LPIPS AlexNet", "alexnet-owt-7be5be79.pth", _lpips, PTH),
    Loader("LPIPS linear layers", "alex.pth", _lpips, PTH),
    Loader("our lip reader", "lipreader.safetensors", _lipreader, OURS),
    Loader("our sync judge", "sync_judge.safetensors", _sync_judge, OURS),
    Loader("a warm-start training state", "last.safetensors", _warm_start, OURS),
    Loader("face-alignment's S3FD", "hub/checkpoints/s3fd-619a316812.pth", _landmarks, PTH),
    Loader("face-alignment's FAN", "hub/checkpoints/2DFAN4-11f355bf06.pth.tar", _landmarks, PTH),
]


@pytest.mark.parametrize("loader, layout", [pytest.param(loader, layout, id=f"{loader.name}-{layout}")
                                            for loader in LOADERS for layout in loader.layouts])
def test_a_file_whose_pickle_runs_code_is_refused_in_one_line_unexecuted(loader, layout, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    marker = tmp_path / "executed"
    path = write_trojan(tmp_path / loader.file, marker, layout)
    with pytest.raises(OpFlowTalkerError) as refused:
        loader.load(path, tmp_path)
    message = str(refused.value)
    assert str(path) in message and "\n" not in message
    assert not marker.exists()
    unpickle_unsafely(path, layout)
    assert marker.exists()


def test_a_resume_file_whose_pickle_runs_code_is_ignored_unexecuted(tmp_path, caplog):
    """A resume checkpoint that is no safetensors file is skipped with a warning, the run starting
    afresh, and is never unpickled."""
    from opflowtalker.training.loop import LoopParams
    from opflowtalker.training.state import load_resume

    marker = tmp_path / "executed"
    path = write_trojan(tmp_path / "last.safetensors", marker, "pickle")
    model = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        resumed = load_resume(path, model, torch.optim.SGD(model.parameters(), lr=0.1), None, "print",
                              LoopParams(steps=1, batch_size=1))
    assert resumed is None
    assert any("ignoring the unreadable resume checkpoint" in r.getMessage() for r in caplog.records)
    assert not marker.exists()
    unpickle_unsafely(path, "pickle")
    assert marker.exists()
