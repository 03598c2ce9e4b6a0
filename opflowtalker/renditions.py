"""What each row of the tables shows for each test clip: a generator's regeneration, or a control.

A generator regenerates a clip from its own audio, window by window (the last window moved back to
end at the last frame), seeing the frames' upper halves and a reference window half the clip away
(:func:`reference_windows`), so the person can come from the reference but the mouth only from the
audio. The four controls (:data:`CONTROLS`) are what the metrics must tell a good generator from.
Either is a :class:`Rendition` per clip, which :func:`opflowtalker.evaluate.score_renditions` scores
alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from .metrics.sync import mel_of_length, shifted_mel
from .training.data import PreparedClip, lower_half_masked
from .video import resize_frames

__all__ = ["Rendition", "CONTROLS", "reference_windows", "model_face_size", "generate_clip", "control_renditions",
           "generator_renditions", "expected_offset"]


def reference_windows(n_frames: int, window: int) -> list[tuple[int, int]]:
    """(target start, reference start) of the windows covering ``n_frames`` frames: windows laid
    end to end, the last moved back to end at the last frame; each reference half the clip (and at
    least one window) later, or as far earlier where that would run past the end."""
    if n_frames < window:
        raise ValueError(f"a clip of {n_frames} frames is shorter than one window of {window}")
    starts = list(range(0, n_frames - window + 1, window))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    gap = max(window, n_frames // 2)
    last = n_frames - window
    return [(s, s + gap if s + gap <= last else max(0, s - gap)) for s in starts]


def model_face_size(model: nn.Module) -> int:
    """The face side a generator takes and gives (Wav2Lip: 96; OpFlowTalker: its config's)."""
    size = getattr(model, "image_size", None) or getattr(getattr(model, "config", None), "image_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} does not say which face size it takes")
    return int(size)


@torch.no_grad()
def generate_clip(model: nn.Module, clip: PreparedClip, window: int, batch_windows: int = 8,
                  with_motion: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Every frame of ``clip`` regenerated from its audio: (T, S, S, 3) uint8. A generator built for
    another face size (the 96-px Wav2Lip on 256-px clips) sees the frames resized to its size, and its
    frames are resized back to the clip's. With ``with_motion``, also the motion field the model
    predicts for each frame, (T, S, S, 2) in the clip's pixels, or None for a model without one."""
    device = next(model.parameters()).device
    n = len(clip)
    pairs = reference_windows(n, window)
    faces_in = resize_frames(clip.faces, model_face_size(model))
    out = np.zeros_like(faces_in)
    motion_out: np.ndarray | None = None
    for i in range(0, len(pairs), batch_windows):
        chunk = pairs[i : i + batch_windows]
        target = np.stack([faces_in[s : s + window] for s, _ in chunk])
        ref = np.stack([faces_in[r : r + window] for _, r in chunk])
        faces = np.concatenate([lower_half_masked(target), ref], axis=-1)  # (B, T, H, W, 6)
        faces = torch.from_numpy(faces).permute(0, 4, 1, 2, 3).float().div_(255.0)
        audio = torch.from_numpy(np.stack([clip.mels[s : s + window] for s, _ in chunk])).unsqueeze(2)
        result = model.generate(audio.to(device), faces.to(device))
        frames = (result.frames.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()
        motion = None if result.motion is None else result.motion.float().permute(0, 2, 3, 4, 1).cpu().numpy()
        if motion is not None and motion_out is None:
            motion_out = np.zeros((*faces_in.shape[:3], 2), np.float32)
        for k, ((s, _), generated) in enumerate(zip(chunk, frames)):
            out[s : s + window] = generated  # a moved-back last window overwrites with the same audio
            if motion is not None:
                motion_out[s : s + window] = motion[k]
    frames = resize_frames(out, clip.faces.shape[1])
    if not with_motion:
        return frames
    if motion_out is not None and motion_out.shape[1] != clip.faces.shape[1]:
        scale = clip.faces.shape[1] / motion_out.shape[1]
        size = (clip.faces.shape[2], clip.faces.shape[1])
        motion_out = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) * scale for m in motion_out])
    return frames, motion_out


@dataclass
class Rendition:
    """What one row shows for one test clip: the video, the audio it is judged against (mel) and
    what the speech recogniser hears in that audio (T_speech)."""

    frames: np.ndarray  # (T, S, S, 3) uint8
    mel: np.ndarray  # (80, M)
    speech: str


CONTROLS = {
    "ground_truth": "Ground truth (the real video)",
    "still_reference": "Still reference frame",
    "wrong_audio": "Real video, another clip's speech",
    "shifted_audio": "Real video, speech delayed",
}
"""The control rows: what the metrics give the truth and the failures they must tell from it."""


def control_renditions(control: str, clips: list[PreparedClip], speech: list[str], window: int, shift: int
                       ) -> list[Rendition]:
    """The control ``control`` (a key of :data:`CONTROLS`) for every clip: the still reference holds
    the first reference frame of ``window``-frame windows, the shifted audio is ``shift`` frames late."""
    n = len(clips)
    if control == "ground_truth":
        return [Rendition(c.faces, c.mel, s) for c, s in zip(clips, speech)]
    if control == "still_reference":
        out = []
        for clip, said in zip(clips, speech):
            first_reference = reference_windows(len(clip), window)[0][1]
            still = np.repeat(clip.faces[first_reference][None], len(clip), axis=0)
            out.append(Rendition(still, clip.mel, said))
        return out
    if control == "wrong_audio":
        # The next clip's speech (another sentence of the test split), cut or padded with silence.
        out = []
        for i, clip in enumerate(clips):
            other = (i + 1) % n
            out.append(Rendition(clip.faces, mel_of_length(clips[other].mel, clip.mel.shape[1]), speech[other]))
        return out
    if control == "shifted_audio":
        return [Rendition(c.faces, shifted_mel(c.mel, shift, c.fps), s) for c, s in zip(clips, speech)]
    raise ValueError(f"no control {control!r}; the controls are {', '.join(CONTROLS)}")


def expected_offset(variant: str, shift: int) -> int:
    """The AV offset a perfect judge finds for a row: -shift for the shifted audio, else 0."""
    return -shift if variant == "shifted_audio" else 0


def generator_renditions(model: nn.Module, clips: list[PreparedClip], speech: list[str], window: int,
                         batch_windows: int):
    """Every clip regenerated by ``model`` from its own audio (a generator, lazily, clip by clip)."""
    for clip, said in zip(clips, speech):
        yield Rendition(generate_clip(model, clip, window, batch_windows), clip.mel, said)
