from pathlib import Path

import cv2
import numpy as np
import pytest

from opflowtalker import assets

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT / "data" / "external"


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    """A real human recording ("front centre", 48 kHz) that ships in Debian's alsa-utils."""
    return assets.speech_path("Front_Center", EXTERNAL)


@pytest.fixture(scope="session")
def hopper_rgb() -> np.ndarray:
    """Grace Hopper's portrait from matplotlib's sample data: a real face, mouth closed."""
    image = cv2.imread(str(assets.portrait_path("hopper", EXTERNAL)))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
