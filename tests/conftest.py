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


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    """A real human recording ("front centre", 48 kHz) that ships in Debian's alsa-utils."""
    return assets.speech_path("Front_Center", EXTERNAL)


@pytest.fixture(scope="session")
def hopper_rgb() -> np.ndarray:
    """Grace Hopper's portrait from matplotlib's sample data: a real face, mouth closed."""
    image = cv2.imread(str(assets.portrait_path("hopper", EXTERNAL)))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
