import builtins
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from opflowtalker import assets

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT / "data" / "external"


def study_params(overrides: dict | None = None) -> dict:
    """The project's params.yaml groups (no profile) with ``overrides`` merged in, mapping by
    mapping: a complete parameter file for a test that changes a few values."""
    import yaml

    from opflowtalker.params import merge

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    groups = {k: v for k, v in raw.items() if k not in ("profile", "profiles")}
    return merge(groups, overrides or {})



def resume_step(path: Path) -> int | None:
    """The step a training run's resume checkpoint at ``path`` holds, None before it has one."""
    from opflowtalker.models.checkpoints import CheckpointError, load_safetensors

    try:
        return int(load_safetensors(path)[1]["step"])
    except CheckpointError:
        return None


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    """A real human recording ("front centre", 48 kHz) that ships in Debian's alsa-utils."""
    return assets.speech_path("Front_Center", EXTERNAL)


@pytest.fixture(scope="session")
def hopper_rgb() -> np.ndarray:
    """Grace Hopper's portrait from matplotlib's sample data: a real face, mouth closed."""
    image = cv2.imread(str(assets.portrait_path("hopper", EXTERNAL)))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class OpensAFile:
    """A pickle payload: unpickling it calls open(marker, 'w'), so the marker shows that it ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


# How a malicious checkpoint is laid out: torch's zip archive, torch's legacy (pre-1.6) stream, or
# a bare pickle stream given a checkpoint's name.
TROJAN_LAYOUTS = ("zip", "legacy", "pickle")


def write_trojan(path: Path, marker: Path, layout: str = "zip") -> Path:
    """A checkpoint at ``path`` that holds a state dict beside a payload whose unpickling would
    create ``marker``."""
    import torch

    obj = {"state_dict": {"w": torch.zeros(1)}, "payload": OpensAFile(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=layout == "zip")
    return path


def unpickle_unsafely(path: Path, layout: str) -> None:
    """Read ``path`` as a loader without weights-only unpickling would: the payload runs."""
    import io

    import torch

    # From the bytes, as the file's name does not change what an unpickler runs (torch.load reads
    # a path named .safetensors as safetensors).
    data = path.read_bytes()
    if layout == "pickle":
        obj = pickle.loads(data)
    else:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    obj["payload"].close()
