"""Claims about the stages' progress bars: drawn on stderr only where a person watches (a terminal,
or ``OPFLOWTALKER_PROGRESS=1``), silent in logs and CI, never on stdout, and never changing a
result: a training run with its bar on ends with the same weights and log as one without, resumed
or not, and a corpus built with its bar on is the same file.
"""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch

from opflowtalker.corpus.lipreading import build_lipreading_corpus
from opflowtalker.flow.train import FlowPairs, _predict
from opflowtalker.models.checkpoints import load_safetensors
from opflowtalker.progress import PROGRESS_ENV, progress, progress_enabled
from opflowtalker.training.loop import LoopParams, fit

from test_corpus_lipreading import CORPUS, CROP, lipreading_params
from test_training_loop import _assert_same_tensors, _linear, _mse, _regression

PARAMS = dict(batch_size=4, lr=1e-2, checkpoint_every=2, log_every=2, threads=1)


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_forcing(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)


def _train(folder, steps: int = 6) -> dict:
    return fit("tiny", _linear(), _mse, _regression, folder / "m.safetensors", folder / "run",
               LoopParams(steps=steps, **PARAMS))


def test_with_stderr_not_a_terminal_a_training_run_draws_no_bar(tmp_path, capsys):
    assert not progress_enabled()
    _train(tmp_path)
    captured = capsys.readouterr()
    assert "tiny" not in captured.err and "step" not in captured.err
    assert captured.out == ""


def test_a_terminal_gets_a_bar_unless_the_variable_turns_it_off(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(3), desc="counting", unit="clip")) == [0, 1, 2]
    assert "counting" in terminal.getvalue() and "3/3" in terminal.getvalue()

    monkeypatch.setenv(PROGRESS_ENV, "0")
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(progress(range(3), desc="counting")) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_only_rank_0_of_a_torchrun_job_draws_a_bar(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert progress_enabled()
    monkeypatch.setenv("RANK", "1")
    assert not progress_enabled()


def test_forced_on_a_training_run_shows_its_name_steps_and_loss_on_stderr_and_nothing_on_stdout(tmp_path, capsys,
                                                                                                  monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "1")
    _train(tmp_path)
    captured = capsys.readouterr()
    assert "tiny" in captured.err and "6/6" in captured.err and "loss=" in captured.err
    assert captured.out == ""


def test_a_run_with_its_bar_on_ends_bit_identical_to_one_without(tmp_path, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    quiet = _train(tmp_path / "off")
    monkeypatch.setenv(PROGRESS_ENV, "1")
    shown = _train(tmp_path / "on")
    _assert_same_tensors(load_safetensors(tmp_path / "off" / "m.safetensors")[0],
                         load_safetensors(tmp_path / "on" / "m.safetensors")[0])
    assert shown["history"] == quiet["history"]


def test_a_resumed_run_counts_on_from_its_step_and_ends_as_one_that_never_stopped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "1")
    _train(tmp_path / "resumed", steps=6)
    capsys.readouterr()
    resumed = _train(tmp_path / "resumed", steps=10)  # the finished run of 6 steps grows to 10
    err = capsys.readouterr().err
    assert resumed["resumed_from"] == 6
    assert "| 6/10" in err and "| 10/10" in err and "| 0/10" not in err

    monkeypatch.setenv(PROGRESS_ENV, "0")
    whole = _train(tmp_path / "whole", steps=10)
    _assert_same_tensors(load_safetensors(tmp_path / "resumed" / "m.safetensors")[0],
                         load_safetensors(tmp_path / "whole" / "m.safetensors")[0])
    assert resumed["history"] == whole["history"]


def test_flow_evaluation_shows_a_bar_per_estimator_and_the_same_predictions(capsys, monkeypatch):
    n, size = 10, 8
    pairs = FlowPairs(np.zeros((n, 3, size, size), np.uint8), np.zeros((n, 3, size, size), np.uint8),
                      np.zeros((n, 2, size, size), np.float32), np.ones((n, size, size), bool),
                      np.ones((n, size, size), bool))

    def estimator(image1, image2):
        return torch.ones(len(image1), 2, size, size)

    monkeypatch.setenv(PROGRESS_ENV, "0")
    quiet = _predict(estimator, pairs, 4, None, "eval-flow ones")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(PROGRESS_ENV, "1")
    shown = _predict(estimator, pairs, 4, None, "eval-flow ones")
    captured = capsys.readouterr()
    assert "eval-flow ones" in captured.err and "3/3" in captured.err and captured.out == ""
    np.testing.assert_array_equal(shown, quiet)


def test_a_corpus_built_with_its_bar_on_counts_its_clips_and_is_the_same_file(tmp_path, capsys, monkeypatch):
    params = lipreading_params(n_sentences=4, seed=5, workers=1)
    monkeypatch.setenv(PROGRESS_ENV, "0")
    quiet = build_lipreading_corpus(tmp_path / "off.npz", CORPUS, params, CROP)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(PROGRESS_ENV, "1")
    shown = build_lipreading_corpus(tmp_path / "on.npz", CORPUS, params, CROP)
    captured = capsys.readouterr()
    assert quiet["clips"] > 0 and "lipreading corpus: 100%" in captured.err and f"{quiet['clips']}/{quiet['clips']}" in captured.err
    assert captured.out == ""
    assert {k: v for k, v in shown.items() if k != "seconds"} == {k: v for k, v in quiet.items() if k != "seconds"}
    with np.load(tmp_path / "off.npz") as off, np.load(tmp_path / "on.npz") as on:
        assert off.files == on.files
        for key in off.files:
            np.testing.assert_array_equal(on[key], off[key])
