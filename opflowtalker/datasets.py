"""Clip lists for the corpus, LRS2 and HDTF: which videos make up a split, and who speaks in each.

The paper trains on LRS2 and tests on LRS2 and HDTF.  Our own corpus is written in LRS2's layout,
so one reader serves both:

* LRS2 (BBC ``mvlrs_v1``): ``main/<speaker>/<clip>.mp4`` with ``<clip>.txt`` beside it, and
  ``pretrain/...`` likewise; the filelists ``train.txt``, ``val.txt``, ``test.txt`` and
  ``pretrain.txt`` list ``<speaker>/<clip>`` one per line (``test.txt`` adds a token such as
  ``NF`` or ``MV`` after the key).  A transcript file opens with ``Text:  WORDS``, then
  ``Conf:`` and a ``WORD START END ASDSCORE`` table.
* the corpus: the same filelists and transcripts, with the speakers directly under the root.
* Wav2Lip's preprocessed LRS2: ``<root>/<speaker>/<clip>/`` holding ``0.jpg, 1.jpg, ...`` (face
  crops) and ``audio.wav``, selected by a filelist of the same keys.
* HDTF: cut clips ``<subset>_<video>_<index>.mp4`` (``WDA_BarackObama_000.mp4``) in one folder.
  HDTF has no transcripts and no official split; :func:`read_hdtf` makes one.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import OpFlowTalkerError

__all__ = [
    "Clip", "DatasetError", "LRS2_SPLITS", "HDTF_SPLITS", "read_transcript", "read_lrs2",
    "read_wav2lip_preprocessed", "hdtf_identity", "read_hdtf", "read_dataset",
]

LRS2_SPLITS = ("train", "val", "test", "pretrain")
HDTF_SPLITS = ("train", "test")


class DatasetError(OpFlowTalkerError, ValueError):
    """A dataset that is not where or what it should be; one sentence for the user."""


@dataclass(frozen=True)
class Clip:
    speaker: str
    name: str
    video: Path
    """The clip's .mp4 (for Wav2Lip's preprocessed layout: its folder of frames and audio.wav)."""
    transcript: str | None
    split: str

    @property
    def key(self) -> str:
        return f"{self.speaker}/{self.name}"


def read_transcript(path: Path) -> str | None:
    """The words of an LRS2-style transcript file (its ``Text:`` line), or None without one."""
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Text:"):
            return " ".join(line[len("Text:"):].split())
    return None


def _require_dir(root: Path) -> Path:
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    return root


def _read_keys(filelist: Path) -> list[str]:
    """The ``<speaker>/<clip>`` keys of a filelist, dropping anything after the key on a line."""
    if not filelist.is_file():
        raise DatasetError(f"filelist {filelist} does not exist")
    keys = []
    for number, line in enumerate(filelist.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key = line.split()[0].removesuffix(".mp4")
        if key.count("/") != 1:
            raise DatasetError(f"line {number} of {filelist} is {line.strip()!r}, not '<speaker>/<clip>'")
        keys.append(key)
    return keys


def _check_missing(paths: list[Path], filelist: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(paths)} clips listed in {filelist} are missing;"
            f" the first is {missing[0]}"
        )


def read_lrs2(root: str | Path, split: str) -> list[Clip]:
    """The clips of one LRS2 split, in filelist order, from the real LRS2 or our corpus.

    The real LRS2 keeps its clips under ``main/`` (``pretrain/`` for the pretrain split); the
    corpus keeps them at the root.  Which one ``root`` is follows from where the first listed
    clip's video is.
    """
    root = _require_dir(Path(root))
    if split not in LRS2_SPLITS:
        raise DatasetError(f"unknown LRS2 split {split!r}; expected one of {', '.join(LRS2_SPLITS)}")
    filelist = root / f"{split}.txt"
    keys = _read_keys(filelist)
    if not keys:
        raise DatasetError(f"filelist {filelist} lists no clips")
    lrs2_base = root / ("pretrain" if split == "pretrain" else "main")
    candidates = [lrs2_base, root]
    base = next((b for b in candidates if (b / f"{keys[0]}.mp4").is_file()), None)
    if base is None:  # first clip missing everywhere: report against the layout the tree has
        base = lrs2_base if lrs2_base.is_dir() else root
    videos = [base / f"{key}.mp4" for key in keys]
    _check_missing(videos, filelist)
    return [
        Clip(video.parent.name, video.stem, video, read_transcript(video.with_suffix(".txt")), split)
        for video in videos
    ]


def read_wav2lip_preprocessed(root: str | Path, filelist: str | Path) -> list[Clip]:
    """Clips of Wav2Lip's preprocessed LRS2, ``<root>/<speaker>/<clip>/{0.jpg,...,audio.wav}``.

    ``filelist`` is a Wav2Lip filelist (``filelists/train.txt``); its stem names the split.  A
    clip counts as present when its ``audio.wav`` is: Wav2Lip's preprocessing writes the audio
    for every video but drops frames where no face is found, so a frame count proves nothing.
    """
    root, filelist = _require_dir(Path(root)), Path(filelist)
    keys = _read_keys(filelist)
    _check_missing([root / key / "audio.wav" for key in keys], filelist)
    return [Clip(*key.split("/"), root / key, None, filelist.stem) for key in keys]


# One person's source videos are numbered (NancyPelosi0, NancyPelosi1) and two names in
# WDA_video_url.txt point at the same YouTube video (gh3YqnvNdio).
_HDTF_ALIASES = {"WhipJimClyburn": "JamesClyburn"}


def hdtf_identity(stem: str) -> str:
    """The person in an HDTF clip named ``[<subset>_]<video>_<index>``: ``WDA_NancyPelosi1_003``
    -> ``WDA_NancyPelosi``.

    RD videos are numbered shows (``Radio1`` ... ``Radio59``) whose speakers the release does
    not name, so each show counts as its own identity.
    """
    video = re.sub(r"_\d+$", "", stem)
    subset, _, person = video.rpartition("_")
    if not re.fullmatch(r"Radio\d+", person):
        person = person.rstrip("0123456789") or person
    person = _HDTF_ALIASES.get(person, person)
    return f"{subset}_{person}" if subset else person


def _hdtf_rank(identity: str, seed: int) -> str:
    # A hash, not a shuffle: adding or removing videos moves no other identity across the split.
    return hashlib.sha256(f"{seed}:{identity}".encode()).hexdigest()


def read_hdtf(root: str | Path, split: str, test_fraction: float = 0.1, seed: int = 0) -> list[Clip]:
    """The HDTF clips of one split, sorted by name.

    HDTF has no official split, so this one is made by identity: every ``.mp4`` under ``root``
    (outside the downloader's ``_videos_raw``) gets the person of :func:`hdtf_identity`; the
    identities are ordered by a seeded hash and the first ``round(test_fraction * n)`` (at least
    one, never all) are the test set.  No identity is in both train and test, and the split
    depends only on the file names and ``seed``.  HDTF has no transcripts.
    """
    root = _require_dir(Path(root))
    if split not in HDTF_SPLITS:
        raise DatasetError(f"unknown HDTF split {split!r}; expected one of {', '.join(HDTF_SPLITS)}")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    videos = sorted(p for p in root.rglob("*.mp4") if "_videos_raw" not in p.relative_to(root).parts)
    if not videos:
        raise DatasetError(f"no .mp4 clips under HDTF root {root}")
    identities = sorted({hdtf_identity(v.stem) for v in videos}, key=lambda i: _hdtf_rank(i, seed))
    if len(identities) < 2:
        raise DatasetError(f"HDTF root {root} holds one identity ({identities[0]}); a split needs two")
    n_test = min(len(identities) - 1, max(1, round(test_fraction * len(identities))))
    test = set(identities[:n_test])
    clips = [Clip(hdtf_identity(v.stem), v.stem, v, None, split) for v in videos]
    return [c for c in clips if (c.speaker in test) == (split == "test")]


_READERS = {"corpus": read_lrs2, "lrs2": read_lrs2, "hdtf": read_hdtf}


def read_dataset(kind: str, root: str | Path, split: str, **kw) -> list[Clip]:
    """The clips of ``split`` in a dataset of ``kind``: "corpus", "lrs2" or "hdtf"."""
    if kind not in _READERS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {', '.join(_READERS)}")
    return _READERS[kind](root, split, **kw)
