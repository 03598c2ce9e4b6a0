"""The corpus chapter's tables and sentences: what the corpus holds, how its split holds out faces
and sentences, and how faithful it is (``metrics/corpus_quality.json``), each computed from the
corpus the run built."""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .comparisons import ReportError

__all__ = ["overview_table", "corpus_sentence", "split_sentence", "quality_frames", "quality_sentences",
           "framing_table", "limitation_bullets", "voice_engines"]

SPLITS = ("train", "val", "test")


def _clips(meta: Mapping[str, Mapping]) -> pd.DataFrame:
    if not meta:
        raise ReportError("the corpus holds no clips")
    return pd.DataFrame([{"split": m["split"], "identity": m["identity"], "voice": m["voice"],
                          "sentence": m["sentence"], "seconds": m["n_frames"] / m["fps"]} for m in meta.values()])


def overview_table(meta: Mapping[str, Mapping]) -> pd.DataFrame:
    """Clips, minutes and voices per split and identity (``meta``: each clip's JSON by key)."""
    return _clips(meta).groupby(["split", "identity"]).agg(
        clips=("voice", "size"), minutes=("seconds", lambda s: s.sum() / 60),
        voices=("voice", lambda v: ", ".join(sorted(set(v))))).round(1)


def voice_engines(voices) -> dict[str, list[str]]:
    """The voices by the engine that speaks them (the name's first part: piper, espeak)."""
    names = {"piper": "Piper neural", "espeak": "espeak-ng formant"}
    engines: dict[str, list[str]] = {}
    for voice in sorted(set(voices)):
        engines.setdefault(names.get(voice.split("-")[0], voice.split("-")[0]), []).append(voice)
    return engines


def corpus_sentence(meta: Mapping[str, Mapping]) -> str:
    """How many photographs, clips per split, minutes, sentences, words and voices the corpus has."""
    table = _clips(meta)
    sentences = set(table.sentence)
    words = {w for s in sentences for w in s.split()}
    counts = table.split.value_counts()
    engines = voice_engines(table.voice)
    return (f"{table.identity.nunique()} photographs, one identity each; {len(table)} clips "
            f"({', '.join(f'{counts.get(split, 0)} {split}' for split in SPLITS)}), "
            f"{table.seconds.sum() / 60:.1f} minutes of video in all; {len(sentences)} different sentences over a "
            f"vocabulary of {len(words)} words; {table.voice.nunique()} voices: "
            + "; ".join(f"{len(vs)} {name} voice{'s' * (len(vs) != 1)} ({', '.join(vs)})" for name, vs in engines.items())
            + ".")


def split_sentence(meta: Mapping[str, Mapping]) -> str:
    """Who speaks the test clips and who the others, and whether any test face or sentence also
    occurs in training or validation."""
    table = _clips(meta)
    faces = {split: set(table.identity[table.split == split]) for split in SPLITS}
    said = {split: set(table.sentence[table.split == split]) for split in SPLITS}
    seen = faces["train"] | faces["val"]
    shared_faces = faces["test"] & seen
    shared_sentences = said["test"] & (said["train"] | said["val"])
    return (f"The {int((table.split == 'test').sum())} test clips are spoken by "
            f"{', '.join(f'`{i}`' for i in sorted(faces['test']))}; the training and validation clips by "
            f"{', '.join(f'`{i}`' for i in sorted(seen))}. "
            + ("No test face occurs in training or validation" if not shared_faces else
               f"The test faces {', '.join(sorted(shared_faces))} also occur in training or validation")
            + f", and {len(shared_sentences)} of the {len(said['test'])} test sentences do"
            + (" (the test split holds out both)." if not shared_faces and not shared_sentences else "."))


def quality_frames(quality: Mapping) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured clips as a table, and its summary: each measure's mean per identity and over
    all clips (``quality``: what the ``corpus_quality`` stage wrote)."""
    if not quality["clips"]:
        raise ReportError("the corpus quality file measures no clips")
    rows = pd.DataFrame(quality["clips"]).drop(columns="key")
    summary = rows.groupby("identity").mean().T.round(3)
    summary["all"] = rows.drop(columns="identity").mean().round(3)
    return rows, summary


def quality_sentences(quality: Mapping) -> str:
    """How to read the quality table: how much of the frame-to-frame change the flow explains on
    moving pixels, on all valid ones and on the decoded H.264 frames; whether dlib finds the face
    and how its lip gap follows the rendered one; how the lip gap follows the loudness."""
    rows, summary = quality_frames(quality)
    low = quality["min_motion"]
    mean, per_id = summary["all"], summary.drop(columns="all")
    found = rows["dlib finds face"].mean()
    r_gap, slope = per_id.loc["dlib gap vs rendered (r)"], per_id.loc["dlib gap vs rendered (slope)"]
    r_loud = per_id.loc["lip gap vs loudness (r)"]
    moving, valid, h264 = (mean["warp ratio, moving px"], mean["warp ratio, all valid px"],
                           mean["warp ratio, moving px, H.264"])
    return " ".join([
        f"Read the table this way. On pixels that move at least {low:g} px, warping with the stored flow leaves "
        f"{moving:.0%} of the frame-to-frame difference of the rendered frames (the first row, all clips): the flow "
        + ("removes most of it, up to bilinear resampling." if moving < 0.5 else "removes less than half of it."),
        f"Over all valid pixels, {mean['valid px barely moving']:.0%} of which move less than {low:g} px, "
        f"the ratio is {valid:.0%}"
        + (", higher, as expected where uint8 rounding is as large as the motion." if valid > moving else ", no higher."),
        f"On the frames decoded from the stored H.264 mp4 it is {h264:.0%}"
        + (", higher than on the rendered frames: compression noise, which no flow can explain." if h264 > moving else "."),
        ("dlib, which knows nothing about the renderer, finds the face in every frame" if found == 1 else
         f"dlib, which knows nothing about the renderer, finds the face in {found:.1%} of the frames "
         f"(least on `{per_id.loc['dlib finds face'].idxmin()}`, {per_id.loc['dlib finds face'].min():.1%})")
        + f"; its lip gap correlates with the rendered one at r = {r_gap.min():.2f} (`{r_gap.idxmin()}`) to "
          f"{r_gap.max():.2f} (`{r_gap.idxmax()}`), and it measures the opening at {slope.min():.2f}× "
          f"(`{slope.idxmin()}`) to {slope.max():.2f}× (`{slope.idxmax()}`) its rendered size.",
        f"The rendered lip gap follows the loudness of the speech at r = {r_loud.min():.2f} (`{r_loud.idxmin()}`) to "
        f"{r_loud.max():.2f} (`{r_loud.idxmax()}`)."])


def framing_table(quality: Mapping) -> pd.DataFrame:
    """How each photograph frames its face (``corpus.quality.identity_framing``), one line each."""
    return pd.DataFrame(quality["framing"]).T


def limitation_bullets(quality: Mapping, meta: Mapping[str, Mapping]) -> str:
    """What the corpus cannot show, in bullets whose numbers come from the run: the framing of the
    tightest photograph, one photograph per identity, the painted mouth, the small head motion,
    the synthetic speech, and the face dlib reads worst."""
    framing = framing_table(quality)
    _, summary = quality_frames(quality)
    mean, per_id = summary["all"], summary.drop(columns="all")
    r_gap, slope = per_id.loc["dlib gap vs rendered (r)"], per_id.loc["dlib gap vs rendered (slope)"]
    table = _clips(meta)
    engines = voice_engines(table.voice)
    piper, espeak = engines.get("Piper neural", []), engines.get("espeak-ng formant", [])
    words = {w for s in set(table.sentence) for w in s.split()}
    edge = "closest chin to lower edge (px)"
    tight = framing[edge].idxmin()
    others = framing.drop(index=tight)
    chin, size = framing.loc[tight, edge], quality["size"]
    bullets = [
        f"* **Framing follows the photograph.** Each clip is a square around the face with a margin, as in LRS2 "
        f"(the renderer asks for {quality['face_scale']:g}× the jaw width), but the photos leave different room: on "
        + (f"`{tight}` the chin comes within {chin:.0f} px of the {size}-px frame's lower edge" if chin >= 0 else
           f"`{tight}` the chin falls up to {-chin:.0f} px below the {size}-px frame's lower edge, out of the picture")
        + f", and the jaw spans {framing.loc[tight, 'jaw width / frame width']:.0%} of the frame's width"
        + (f", against a chin at least {others[edge].min():.0f} px inside the frame and "
           f"{others['jaw width / frame width'].min():.0%}–{others['jaw width / frame width'].max():.0%} on the others."
           if len(others) else "."),
        f"* **{len(framing)} faces, one photograph each.** Real datasets have thousands of speakers, each filmed "
        "from changing angles and lighting. Here an identity is one still photo, so identity and pose vary far less, "
        "and generalising to the held-out face is correspondingly easier or harder to judge.",
        "* **The mouth interior is painted.** Teeth and cavity are flat shapes, with no tongue. The flow there is "
        "undefined and masked. The lips press towards closure on *p*, *b* and *m*: the rendered gap there has a "
        f"median of {framing['gap at p, b, m (median px)'].min():.2f}–{framing['gap at p, b, m (median px)'].max():.2f} px "
        f"per identity, against widest openings of {framing['widest gap (median px)'].min():.1f}–"
        f"{framing['widest gap (median px)'].max():.1f} px.",
        f"* **Head motion is small and smooth.** The mean flow over valid pixels is "
        f"{mean['mean flow, valid px (px/frame)']:.2f} px per frame, and {mean['share of the motion below the nose']:.0%} "
        "of the motion lies below the nose. The renderer moves only the jaw, the lips, the eyelids (blinks) and the "
        "head as a whole: there are no expressions, gaze shifts or shoulder movement.",
        f"* **Synthetic speech.** {len(piper)} Piper voice{'s' * (len(piper) != 1)} ({', '.join(piper) or 'none'}) and "
        f"{len(espeak)} espeak-ng formant voices, with phone timings taken from the synthesisers themselves: cleaner "
        f"and more regular than real speech, and a small vocabulary ({len(words)} words).",
        f"* **The lip-gap detector disagrees most on `{r_gap.idxmin()}`** (r = {r_gap.min():.2f}, opening measured "
        f"at {slope[r_gap.idxmin()]:.2f}× its rendered size); the rendered gap itself is exact.",
    ]
    return "\n".join(bullets)
