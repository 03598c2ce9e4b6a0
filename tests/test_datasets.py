"""The dataset readers find the clips of the real LRS2, our corpus and HDTF, and refuse bad trees."""
from pathlib import Path

import pytest

from opflowtalker.datasets import (
    Clip, DatasetError, hdtf_identity, read_dataset, read_hdtf, read_lrs2, read_transcript,
    read_wav2lip_preprocessed,
)

LRS2_TRANSCRIPT = """Text:  WE'RE GOING TO  HAVE A LOOK
Conf:  4

WORD START END ASDSCORE
WE'RE 0.10 0.29 5.4
GOING 0.29 0.48 6.1
TO 0.48 0.55 6.3
HAVE 0.55 0.74 7.0
A 0.74 0.80 7.2
LOOK 0.80 1.10 7.9
"""


def make_clip(base: Path, key: str, text: str | None = LRS2_TRANSCRIPT) -> None:
    video = base / f"{key}.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.touch()
    if text is not None:
        video.with_suffix(".txt").write_text(text)


def write_list(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def lrs2_root(tmp_path: Path) -> Path:
    """A miniature mvlrs_v1: clips under main/ and pretrain/, filelists at the root."""
    keys = ["6330311066473698535/00011", "6330311066473698535/00022", "6331559613336179781/00020"]
    for key in keys:
        make_clip(tmp_path / "main", key)
    make_clip(tmp_path / "pretrain", "5535415699068794046/00001")
    write_list(tmp_path / "train.txt", keys[:2])
    write_list(tmp_path / "val.txt", [])
    write_list(tmp_path / "test.txt", [f"{keys[0]} NF", "", f"{keys[2]} MV"])
    write_list(tmp_path / "pretrain.txt", ["5535415699068794046/00001"])
    return tmp_path


def test_real_lrs2_layout_reads_main_and_strips_test_tokens(lrs2_root: Path):
    clips = read_lrs2(lrs2_root, "test")
    assert [c.key for c in clips] == ["6330311066473698535/00011", "6331559613336179781/00020"]
    first = clips[0]
    assert first == Clip(
        "6330311066473698535", "00011", lrs2_root / "main/6330311066473698535/00011.mp4",
        "WE'RE GOING TO HAVE A LOOK", "test",
    )
    assert [c.key for c in read_lrs2(lrs2_root, "pretrain")] == ["5535415699068794046/00001"]
    assert all(c.video.is_relative_to(lrs2_root / "pretrain") for c in read_lrs2(lrs2_root, "pretrain"))


def test_corpus_layout_keeps_speakers_at_the_root(tmp_path: Path):
    make_clip(tmp_path, "spk_a/00001", "Text:  BIN BLUE AT F TWO NOW\n")
    make_clip(tmp_path, "spk_b/00001", None)
    write_list(tmp_path / "train.txt", ["spk_a/00001", "spk_b/00001"])
    clips = read_dataset("corpus", tmp_path, "train")
    assert [(c.key, c.video, c.transcript) for c in clips] == [
        ("spk_a/00001", tmp_path / "spk_a/00001.mp4", "BIN BLUE AT F TWO NOW"),
        ("spk_b/00001", tmp_path / "spk_b/00001.mp4", None),
    ]
    assert read_dataset("lrs2", tmp_path, "train") == clips


def test_transcript_is_the_text_line_only(tmp_path: Path):
    path = tmp_path / "00001.txt"
    path.write_text(LRS2_TRANSCRIPT)
    assert read_transcript(path) == "WE'RE GOING TO HAVE A LOOK"
    assert read_transcript(tmp_path / "absent.txt") is None


def test_wav2lip_preprocessed_layout(tmp_path: Path):
    for key in ("6330311066473698535/00011", "6331559613336179781/00020"):
        (tmp_path / key).mkdir(parents=True)
        (tmp_path / key / "0.jpg").touch()
        (tmp_path / key / "audio.wav").touch()
    filelist = tmp_path / "val.txt"
    write_list(filelist, ["6330311066473698535/00011", "6331559613336179781/00020"])
    clips = read_wav2lip_preprocessed(tmp_path, filelist)
    assert [(c.key, c.video, c.split) for c in clips] == [
        ("6330311066473698535/00011", tmp_path / "6330311066473698535/00011", "val"),
        ("6331559613336179781/00020", tmp_path / "6331559613336179781/00020", "val"),
    ]
    (tmp_path / "6331559613336179781/00020/audio.wav").unlink()
    with pytest.raises(DatasetError, match="1 of 2 clips"):
        read_wav2lip_preprocessed(tmp_path, filelist)


HDTF_NAMES = [
    "WDA_BarackObama_000", "WDA_BarackObama_001", "WDA_NancyPelosi0_000", "WDA_NancyPelosi1_000",
    "WDA_NancyPelosi3_002", "WDA_WhipJimClyburn_000", "WDA_JamesClyburn1_000", "WRA_JohnKasich0_000",
    "WRA_JohnKasich3_000", "RD_Radio1_000", "RD_Radio11_000", "RD_Radio11_001", "RD_Radio34_009",
    "WRA_MarcoRubio_000", "WDA_KamalaHarris_000", "WRA_RandPaul2_001",
] + [f"WDA_Person{chr(65 + i)}_000" for i in range(14)]


@pytest.fixture
def hdtf_root(tmp_path: Path) -> Path:
    for name in HDTF_NAMES:
        (tmp_path / f"{name}.mp4").touch()
    (tmp_path / "_videos_raw").mkdir()
    (tmp_path / "_videos_raw" / "WDA_BarackObama.mp4").touch()  # the uncut download
    return tmp_path


def test_hdtf_identity_merges_numbered_source_videos_of_one_person():
    assert hdtf_identity("WDA_BarackObama_000") == "WDA_BarackObama"
    assert hdtf_identity("WDA_NancyPelosi0_000") == hdtf_identity("WDA_NancyPelosi3_002") == "WDA_NancyPelosi"
    assert hdtf_identity("WDA_WhipJimClyburn_000") == hdtf_identity("WDA_JamesClyburn1_000")
    assert hdtf_identity("RD_Radio11_001") == "RD_Radio11" != hdtf_identity("RD_Radio1_000")
    assert hdtf_identity("Radio11_0") == "Radio11"  # the README's naming, without the subset prefix


def test_hdtf_split_is_identity_disjoint_complete_and_deterministic(hdtf_root: Path):
    train, test = read_hdtf(hdtf_root, "train"), read_hdtf(hdtf_root, "test")
    assert {c.speaker for c in train}.isdisjoint({c.speaker for c in test})
    assert sorted(c.name for c in train + test) == sorted(HDTF_NAMES)
    n_identities = len({hdtf_identity(n) for n in HDTF_NAMES})
    assert len({c.speaker for c in test}) == round(0.1 * n_identities)
    assert all(c.transcript is None for c in train + test)
    assert {c.split for c in test} == {"test"}
    assert read_dataset("hdtf", hdtf_root, "test") == test
    other_seed = {c.speaker for c in read_hdtf(hdtf_root, "test", test_fraction=0.3, seed=1)}
    assert len(other_seed) == round(0.3 * n_identities)


def test_hdtf_split_moves_no_identity_when_another_is_added(hdtf_root: Path):
    before = {c.speaker for c in read_hdtf(hdtf_root, "test", test_fraction=0.3)}
    (hdtf_root / "WDA_Newcomer_000.mp4").touch()
    after = {c.speaker for c in read_hdtf(hdtf_root, "test", test_fraction=0.3)}
    assert len(before ^ after) <= 2  # at most one identity enters and one leaves at the boundary


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda root: read_lrs2(root / "nowhere", "train"), "is not a directory"),
        (lambda root: read_lrs2(root, "dev"), "unknown LRS2 split 'dev'"),
        (lambda root: read_lrs2(root / "main", "train"), r"filelist .*train\.txt does not exist"),
        (lambda root: read_lrs2(root, "val"), "lists no clips"),
        (lambda root: read_dataset("voxceleb", root, "train"), "unknown dataset kind 'voxceleb'"),
        (lambda root: read_hdtf(root, "val"), "unknown HDTF split 'val'"),
        (lambda root: read_hdtf(root, "test", test_fraction=1.0), "test_fraction"),
    ],
)
def test_bad_input_is_one_clear_error(lrs2_root: Path, call, message):
    with pytest.raises(DatasetError, match=message):
        call(lrs2_root)


def test_missing_videos_are_counted_and_the_first_named(lrs2_root: Path):
    (lrs2_root / "main/6330311066473698535/00022.mp4").unlink()
    write_list(lrs2_root / "train.txt", ["6330311066473698535/00011", "6330311066473698535/00022", "x/00001"])
    first = r"main/6330311066473698535/00022\.mp4"
    with pytest.raises(DatasetError, match=rf"2 of 3 clips listed in .*train\.txt are missing; the first is .*{first}"):
        read_lrs2(lrs2_root, "train")


def test_malformed_filelist_line_is_reported(lrs2_root: Path):
    write_list(lrs2_root / "train.txt", ["00011"])
    with pytest.raises(DatasetError, match="line 1 .* not '<speaker>/<clip>'"):
        read_lrs2(lrs2_root, "train")


def test_hdtf_needs_clips_of_two_identities(tmp_path: Path):
    with pytest.raises(DatasetError, match="no .mp4 clips"):
        read_hdtf(tmp_path, "train")
    (tmp_path / "WDA_BarackObama_000.mp4").touch()
    (tmp_path / "WDA_BarackObama_001.mp4").touch()
    with pytest.raises(DatasetError, match="one identity"):
        read_hdtf(tmp_path, "train")
