"""The study's training loop and its training windows.

The loop's claims: a killed run resumes to the same weights as one that never stopped; a changed
configuration starts afresh; under torchrun the gradients are averaged over the ranks; a step's batch
and randomness depend on the seed and the step alone; a non-finite loss stops training. The windows'
claims: the generator sees masked targets next to a reference window of the same clip with the
audio of each frame, and SyncNet's labels say whether the audio is the window's own.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from opflowtalker.landmarks import mouth_masks
from opflowtalker.models.checkpoints import load_safetensors
from opflowtalker.training.data import PreparedClip, generator_batch, lower_half_masked, syncnet_batch
from opflowtalker.training.loop import LoopParams, fit, source_digest, step_seed

from conftest import resume_step

ROOT = Path(__file__).resolve().parents[1]

# One thread everywhere: on a busy 2-core machine two OpenMP threads per process make a tiny step
# take tens of milliseconds instead of microseconds, and a fixed thread count keeps float sums
# identical between the processes whose weights are compared bit for bit.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# A tiny regression with BatchNorm (buffers that must survive a resume) and Dropout (torch RNG that
# must be reseeded per step). Each step sleeps so that a kill lands in the middle of the run.
RESUMABLE_SCRIPT = '''
import sys, time
import numpy as np
import torch
from torch import nn
from opflowtalker.training.loop import LoopParams, fit

PARAMS = LoopParams(steps=40, batch_size=8, lr=1e-2, seed=7, checkpoint_every=5, log_every=10, threads=1)
STEP_SECONDS = 0.05


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 1))


def sample_batch(rng, n):
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype=np.float32) + rng.normal(scale=0.1, size=(n, 1))
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))


def loss_fn(model, batch, step):
    time.sleep(STEP_SECONDS)
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


def main(out, run_dir):
    return fit("tiny", make_model(), loss_fn, sample_batch, out, run_dir, PARAMS, metadata={"width": 16})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''

# Every rank trains the same MLP (no BatchNorm, no Dropout: nothing but the gradient couples the
# ranks) and then writes the weights it holds to a file of its own.
DDP_SCRIPT = '''
import os, sys
import numpy as np
import torch
from torch import nn
from safetensors.torch import save_file
from opflowtalker.training.loop import LoopParams, fit

PARAMS = LoopParams(steps=8, batch_size=8, lr=1e-2, seed=11, checkpoint_every=4, log_every=2, threads=1)


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


def draw(rng, n):
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.sin(x).sum(axis=1, keepdims=True) + rng.normal(scale=0.1, size=(n, 1))
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))


def loss_fn(model, batch, step):
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


def main(folder):
    folder = __import__("pathlib").Path(folder)
    rank = int(os.environ.get("RANK", "0"))
    model = make_model()
    # Each rank names its own output: only rank 0's may exist afterwards.
    fit("ddp", model, loss_fn, draw, folder / f"model_rank{rank}.safetensors", folder / "run", PARAMS)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(folder / f"weights_rank{rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
'''


def _load_script(path: Path, text: str):
    """Write ``text`` to ``path`` and import it, so the test runs the very code the child runs."""
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- the loop --------------------------------------------------------------------------------------

def test_a_run_killed_midway_and_started_again_ends_with_the_same_weights_as_one_that_never_stopped(tmp_path):
    script = _load_script(tmp_path / "train_tiny.py", RESUMABLE_SCRIPT)
    killed_out, killed_run = tmp_path / "killed" / "tiny.safetensors", tmp_path / "killed" / "run"
    command = [sys.executable, str(tmp_path / "train_tiny.py"), str(killed_out), str(killed_run)]

    child = subprocess.Popen(command, env=CHILD_ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while (resume_step(killed_run / "resume.safetensors") or 0) < 10:
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "the run never reached step 10"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    killed_at = resume_step(killed_run / "resume.safetensors")
    assert 10 <= killed_at < script.PARAMS.steps, "the kill must land in the middle of the run"
    assert not killed_out.exists()

    # Started again; meanwhile (the steps mostly sleep) the uninterrupted run, in this process,
    # from the same code.
    again = subprocess.Popen(command, env=CHILD_ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        whole_out = tmp_path / "whole" / "tiny.safetensors"
        whole_log = script.main(whole_out, tmp_path / "whole" / "run")
        output, _ = again.communicate(timeout=60)
    finally:
        if again.poll() is None:
            again.kill()
            again.communicate()
    assert again.returncode == 0, output.decode()[-3000:]

    killed_weights, killed_meta = load_safetensors(killed_out)
    whole_weights, _ = load_safetensors(whole_out)
    assert any("running_mean" in key for key in whole_weights)  # the BatchNorm buffers are compared too
    _assert_same_tensors(killed_weights, whole_weights)
    assert killed_meta["width"] == 16 and killed_meta["train"]["steps"] == 40

    killed_log = json.loads(killed_out.with_suffix(".json").read_text())
    assert whole_log["resumed_from"] == 0
    assert killed_log["resumed_from"] == killed_at > 0
    assert killed_log["history"] == whole_log["history"]
    assert killed_log["history"]["step"] == list(range(10, 41, 10))


def _regression(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(x.sum(axis=1, keepdims=True))


def _mse(model: nn.Module, batch, step: int) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def test_a_changed_configuration_does_not_resume_someone_elses_run(tmp_path):
    params = LoopParams(steps=6, batch_size=4, lr=1e-2, checkpoint_every=2, log_every=2, threads=1)
    out, run_dir = tmp_path / "m.safetensors", tmp_path / "run"
    first = fit("m", _linear(), _mse, _regression, out, run_dir, params)
    assert first["resumed_from"] == 0

    # The same configuration picks up its own finished run (nothing left to train) ...
    again = fit("m", _linear(), _mse, _regression, out, run_dir, params)
    assert again["resumed_from"] == 6
    # ... while a different learning rate, or different metadata, trains from the start.
    other_lr = fit("m", _linear(), _mse, _regression, out, run_dir,
                   LoopParams(steps=6, batch_size=4, lr=2e-2, checkpoint_every=2, log_every=2, threads=1))
    assert other_lr["resumed_from"] == 0
    assert other_lr["history"]["step"] == [2, 4, 6]
    other_meta = fit("m", _linear(), _mse, _regression, out, run_dir,
                     LoopParams(steps=6, batch_size=4, lr=2e-2, checkpoint_every=2, log_every=2, threads=1),
                     metadata={"width": 2})
    assert other_meta["resumed_from"] == 0


def test_a_run_whose_model_code_changed_starts_afresh(tmp_path, monkeypatch):
    import importlib.util
    import sys

    source = tmp_path / "tiny_model.py"
    source.write_text("from torch import nn\n\n\nclass Tiny(nn.Linear):\n    pass\n")
    spec = importlib.util.spec_from_file_location("tiny_model", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tiny_model", module)  # imported, as the package's modules are
    spec.loader.exec_module(module)

    def tiny() -> nn.Module:
        torch.manual_seed(0)
        return module.Tiny(3, 1)

    params = LoopParams(steps=6, batch_size=4, lr=1e-2, checkpoint_every=2, log_every=2, threads=1)
    out, run_dir = tmp_path / "m.safetensors", tmp_path / "run"
    before = source_digest(tiny(), _mse, _regression)
    assert fit("m", tiny(), _mse, _regression, out, run_dir, params)["resumed_from"] == 0
    assert fit("m", tiny(), _mse, _regression, out, run_dir, params)["resumed_from"] == 6
    # A comment or docstring in that file is not code: the finished run stands.
    source.write_text('"""A tiny model."""\n' + source.read_text() + "\n# the model is tiny\n")
    assert source_digest(tiny(), _mse, _regression) == before
    # The file that defines the model changes (its code, say): the finished run is not reused.
    source.write_text(source.read_text() + "\nWIDTH = 3\n")
    assert source_digest(tiny(), _mse, _regression) != before
    assert fit("m", tiny(), _mse, _regression, out, run_dir, params)["resumed_from"] == 0
    # A file beside it that defines none of the three leaves the digest alone.
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text("x = 1\n")
    unchanged = source_digest(tiny(), _mse, _regression)
    elsewhere.write_text("x = 2\n")
    assert source_digest(tiny(), _mse, _regression) == unchanged


def test_a_finished_run_longer_than_asked_is_not_passed_off_as_a_shorter_one(tmp_path):
    out, run_dir = tmp_path / "m.safetensors", tmp_path / "run"
    fit("m", _linear(), _mse, _regression, out, run_dir,
        LoopParams(steps=6, batch_size=4, lr=1e-2, checkpoint_every=2, log_every=2, threads=1))
    shorter = fit("m", _linear(), _mse, _regression, out, run_dir,
                  LoopParams(steps=4, batch_size=4, lr=1e-2, checkpoint_every=2, log_every=2, threads=1))
    fresh = fit("m", _linear(), _mse, _regression, tmp_path / "f.safetensors", tmp_path / "fresh",
                LoopParams(steps=4, batch_size=4, lr=1e-2, checkpoint_every=2, log_every=2, threads=1))
    assert shorter["resumed_from"] == 0 and shorter["history"] == fresh["history"]


def test_under_torchrun_with_two_processes_training_uses_ddp_and_both_ranks_hold_identical_weights(tmp_path):
    script = _load_script(tmp_path / "train_ddp.py", DDP_SCRIPT)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(tmp_path / "train_ddp.py"), str(tmp_path)],
        env=CHILD_ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"torchrun, 2 processes: {seconds:.1f} s")

    rank0, _ = load_safetensors(tmp_path / "weights_rank0.safetensors")
    rank1, _ = load_safetensors(tmp_path / "weights_rank1.safetensors")
    _assert_same_tensors(rank0, rank1)

    # Only rank 0 writes: its model and log exist, rank 1's do not.
    assert (tmp_path / "model_rank0.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.glob("model_rank*")) == ["model_rank0.json", "model_rank0.safetensors"]
    written, _ = load_safetensors(tmp_path / "model_rank0.safetensors")
    _assert_same_tensors(written, rank0)
    ddp_log = json.loads((tmp_path / "model_rank0.json").read_text())
    assert ddp_log["world_size"] == 2 and ddp_log["params"]["batch_size"] == 8

    # The averaged gradient of two ranks drawing 4 samples each is the gradient of one process
    # drawing both ranks' samples, by the loop's rule rng = default_rng([seed, step, rank]).
    seed = script.PARAMS.seed
    drawn_steps: list[int] = []

    def both_ranks(rng: np.random.Generator, n: int):
        step = len(drawn_steps)
        drawn_steps.append(step)
        parts = [script.draw(np.random.default_rng([seed, step, rank]), n // 2) for rank in (0, 1)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    single = script.make_model()
    single_log = fit("ddp", single, script.loss_fn, both_ranks, tmp_path / "single" / "m.safetensors",
                     tmp_path / "single" / "run", script.PARAMS)
    assert single_log["world_size"] == 1 and drawn_steps == list(range(script.PARAMS.steps))
    for key, value in single.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=0, atol=1e-6)
    # Not merely the initial weights: training moved them.
    untrained = script.make_model().state_dict()
    assert max(float((rank0[k] - untrained[k]).abs().max()) for k in untrained) > 1e-2
    # The logged loss is the mean over the ranks, i.e. the loss of the global batch.
    assert ddp_log["history"]["step"] == single_log["history"]["step"]
    np.testing.assert_allclose(ddp_log["history"]["loss"], single_log["history"]["loss"], rtol=1e-5)


class _Interrupted(Exception):
    pass


def test_a_steps_batch_and_randomness_depend_only_on_the_seed_and_the_step(tmp_path):
    params = LoopParams(steps=6, batch_size=3, lr=1e-2, seed=5, checkpoint_every=2, log_every=2, threads=1)

    def recording(stop_at: int = -1):
        drawn, noise = [], {}

        def sample_batch(rng, n):
            batch = _regression(rng, n)
            drawn.append(batch[0].clone())
            return batch

        def loss_fn(model, batch, step):
            if step == stop_at:
                raise _Interrupted
            noise[step] = torch.rand(4)  # what torch's generator gives inside the step
            return _mse(model, batch, step)
        return drawn, noise, sample_batch, loss_fn

    drawn, noise, sample_batch, loss_fn = recording()
    fit("m", _linear(), loss_fn, sample_batch, tmp_path / "a.safetensors", tmp_path / "run_a", params)
    assert len(drawn) == 6
    for step, x in enumerate(drawn):
        expected = np.random.default_rng([5, step, 0]).normal(size=(3, 3)).astype(np.float32)
        np.testing.assert_array_equal(x.numpy(), expected)
        generator = torch.Generator().manual_seed(step_seed(5, step, 0))
        assert torch.equal(noise[step], torch.rand(4, generator=generator))
    assert not torch.equal(drawn[0], drawn[1])

    # A run interrupted after step 3 (checkpoint at 2) draws steps 2..5 again, identically.
    drawn_b, noise_b, sample_b, loss_b = recording(stop_at=3)
    with pytest.raises(_Interrupted):
        fit("m", _linear(), loss_b, sample_b, tmp_path / "b.safetensors", tmp_path / "run_b", params)
    drawn_c, noise_c, sample_c, loss_c = recording()
    log = fit("m", _linear(), loss_c, sample_c, tmp_path / "b.safetensors", tmp_path / "run_b", params)
    assert log["resumed_from"] == 2
    assert len(drawn_c) == 4
    for step, x in zip(range(2, 6), drawn_c):
        assert torch.equal(x, drawn[step])
        assert torch.equal(noise_c[step], noise[step])

    # Another seed, other batches.
    drawn_d, _, sample_d, loss_d = recording()
    fit("m", _linear(), loss_d, sample_d, tmp_path / "d.safetensors", tmp_path / "run_d",
        LoopParams(steps=1, batch_size=3, seed=6, threads=1))
    assert not torch.equal(drawn_d[0], drawn[0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path, bad):
    def loss_fn(model, batch, step):
        terms = _mse(model, batch, step)
        return {"loss": terms["loss"] * bad} if step == 3 else terms

    out = tmp_path / "m.safetensors"
    with pytest.raises(FloatingPointError, match=r"m: the loss became (nan|inf) at step 3"):
        fit("m", _linear(), loss_fn, _regression, out, tmp_path / "run",
            LoopParams(steps=10, batch_size=2, checkpoint_every=2, threads=1))
    assert not out.exists()


def test_the_rate_holds_until_the_decay_then_falls_along_a_half_cosine_to_nearly_zero():
    params = LoopParams(steps=10, batch_size=1, lr=1e-2, decay_steps=4)
    rates = [params.rate(step) for step in range(10)]
    assert params.decay_from == 6 and rates[:6] == [1e-2] * 6
    assert all(a > b for a, b in zip(rates[5:], rates[6:])) and 0 < rates[-1] < 1e-3
    assert LoopParams(steps=10, batch_size=1, lr=1e-2).decay_from is None


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(out)[0]


def test_a_constant_rate_run_grows_into_a_decaying_one_as_if_it_had_been_trained_so_from_the_start(tmp_path):
    common = {"batch_size": 4, "lr": 1e-2, "checkpoint_every": 2, "log_every": 2, "threads": 1}
    out, run_dir = tmp_path / "m.safetensors", tmp_path / "run"
    fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=6, **common))
    grown = fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=10, decay_steps=4, **common))
    fresh_out = tmp_path / "fresh.safetensors"
    fresh = fit("m", _linear(), _mse, _regression, fresh_out, tmp_path / "fresh",
                LoopParams(steps=10, decay_steps=4, **common))
    assert grown["resumed_from"] == 6 and fresh["resumed_from"] == 0
    _assert_same_tensors(_final_weights(out), _final_weights(fresh_out))
    # A constant run of the same length ends elsewhere: the decay is what made them agree.
    constant_out = tmp_path / "constant.safetensors"
    fit("m", _linear(), _mse, _regression, constant_out, tmp_path / "constant", LoopParams(steps=10, **common))
    assert not torch.equal(_final_weights(constant_out)["weight"], _final_weights(out)["weight"])


def test_a_checkpoint_written_inside_a_decay_resumes_only_under_the_same_schedule(tmp_path):
    common = {"batch_size": 4, "lr": 1e-2, "checkpoint_every": 2, "log_every": 2, "threads": 1}
    out, run_dir = tmp_path / "m.safetensors", tmp_path / "run"
    fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=8, decay_steps=4, **common))
    # Steps 4-7 ran at falling rates: a run that decays over its last 2 of 10 steps cannot use them ...
    other = fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=10, decay_steps=2, **common))
    assert other["resumed_from"] == 0
    # ... nor can a constant run, while the same schedule picks up its own finished run.
    fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=8, decay_steps=4, **common))
    assert fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=8, **common))["resumed_from"] == 0
    fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=8, decay_steps=4, **common))
    same = fit("m", _linear(), _mse, _regression, out, run_dir, LoopParams(steps=8, decay_steps=4, **common))
    assert same["resumed_from"] == 8


def test_loop_params_refuse_impossible_settings():
    with pytest.raises(ValueError, match="batch_size"):
        LoopParams(steps=1, batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        LoopParams(steps=1, batch_size=1, precision="fp8")
    with pytest.raises(ValueError, match="decay_steps"):
        LoopParams(steps=4, batch_size=1, decay_steps=5)


# --- the training windows --------------------------------------------------------------------------

SIZE, WINDOW = 16, 5


def _clip(key: str, n_frames: int, seed: int) -> PreparedClip:
    """A clip whose every frame, mel window and flow field is distinct noise, so a batch's contents
    can be traced back to the frame they came from; the lips sit in the lower half."""
    rng = np.random.default_rng(seed)
    landmarks = rng.uniform(2, SIZE - 2, size=(n_frames, 68, 2)).astype(np.float32)
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    landmarks[:, 48:68] = np.stack([8 + 3 * np.cos(angles), 12 + 1.5 * np.sin(angles)], axis=-1)
    return PreparedClip(
        key=key,
        faces=rng.integers(1, 256, size=(n_frames, SIZE, SIZE, 3), dtype=np.uint8),
        mels=rng.normal(size=(n_frames, 80, 16)).astype(np.float32),
        landmarks=landmarks,
        fps=25.0,
        mel=rng.normal(size=(80, 4 * n_frames)).astype(np.float32),
        flow=rng.normal(size=(n_frames - 1, SIZE, SIZE, 2)).astype(np.float16),
        valid=rng.random(size=(n_frames - 1, SIZE, SIZE)) > 0.5,
    )


def _locate(clips: list[PreparedClip], frame: np.ndarray, rows: slice = slice(None)) -> tuple[int, int]:
    """(clip index, frame index) of the one frame whose pixels (in ``rows``) equal ``frame``."""
    found = [(c, t) for c, clip in enumerate(clips) for t in range(len(clip))
             if np.array_equal(clip.faces[t, rows], frame)]
    assert len(found) == 1
    return found[0]


def _as_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    return np.rint(frames.permute(1, 2, 3, 0).numpy() * 255).astype(np.uint8)


def test_generator_batch_shows_masked_targets_a_reference_window_of_the_same_clip_and_each_frames_audio():
    clips = [_clip("a", 9, 1), _clip("b", 12, 2)]
    batch = generator_batch(clips, np.random.default_rng(0), batch_size=6, window=WINDOW)
    B, T, H = 6, WINDOW, SIZE
    assert batch.audio.shape == (B, T, 1, 80, 16)
    assert batch.faces.shape == (B, 6, T, H, H) and batch.target.shape == (B, 3, T, H, H)
    assert batch.sync_mel.shape == (B, 1, 80, 16)
    assert batch.flow.shape == (B, T - 1, 2, H, H) and batch.flow.dtype == torch.float32
    assert batch.valid.shape == (B, T - 1, H, H) and batch.valid.dtype == torch.bool
    assert batch.mouth.shape == (B, T, H, H) and batch.mouth.dtype == torch.bool
    assert float(batch.faces.min()) >= 0.0 and float(batch.faces.max()) <= 1.0

    for b in range(B):
        target = _as_uint8(batch.target[b])
        c, start = _locate(clips, target[0])
        clip = clips[c]
        np.testing.assert_array_equal(target, clip.faces[start : start + T])
        # The masked copy: the upper half is the target, the lower half is black.
        masked = batch.faces[b, :3]
        assert torch.equal(masked[:, :, H // 2 :], torch.zeros_like(masked[:, :, H // 2 :]))
        assert torch.equal(masked[:, :, : H // 2], batch.target[b, :, :, : H // 2])
        # The reference: T consecutive frames of the same clip, from another window.
        reference = _as_uint8(batch.faces[b, 3:])
        rc, ref_start = _locate(clips, reference[0])
        assert rc == c and ref_start != start
        np.testing.assert_array_equal(reference, clip.faces[ref_start : ref_start + T])
        # The audio of each frame, and the first frame's mel window for the sync loss.
        np.testing.assert_array_equal(batch.audio[b, :, 0].numpy(), clip.mels[start : start + T])
        np.testing.assert_array_equal(batch.sync_mel[b, 0].numpy(), clip.mels[start])
        # The flow between consecutive frames of the window, channels first.
        expected_flow = clip.flow[start : start + T - 1].astype(np.float32).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(batch.flow[b].numpy(), expected_flow)
        np.testing.assert_array_equal(batch.valid[b].numpy(), clip.valid[start : start + T - 1])
        # The mouth masks cover the lips (in the lower half) and not the whole face.
        mouth = batch.mouth[b]
        assert bool(mouth.flatten(1).any(dim=1).all())
        assert not bool(mouth[:, : H // 2 - 2].any()) and float(mouth.float().mean()) < 0.5


def test_a_mirrored_window_mirrors_its_reference_masks_and_flow_and_negates_the_horizontal_flow():
    clips = [_clip("a", 9, 1), _clip("b", 12, 2)]
    batch = generator_batch(clips, np.random.default_rng(3), 4, WINDOW, flip=1.0)
    T = WINDOW
    for b in range(4):
        target = _as_uint8(batch.target[b])[:, :, ::-1]
        c, start = _locate(clips, target[0])
        clip = clips[c]
        np.testing.assert_array_equal(target, clip.faces[start : start + T])
        reference = _as_uint8(batch.faces[b, 3:])[:, :, ::-1]
        rc, ref_start = _locate(clips, reference[0])
        assert rc == c and ref_start != start
        mouth = mouth_masks(clip.landmarks[start : start + T], SIZE, dilate=3)[:, :, ::-1]
        np.testing.assert_array_equal(batch.mouth[b].numpy(), mouth)
        np.testing.assert_array_equal(batch.valid[b].numpy(), clip.valid[start : start + T - 1][:, :, ::-1])
        flow = clip.flow[start : start + T - 1].astype(np.float32)[:, :, ::-1]
        np.testing.assert_array_equal(batch.flow[b, :, 0].numpy(), -flow[..., 0])
        np.testing.assert_array_equal(batch.flow[b, :, 1].numpy(), flow[..., 1])
        # The audio is not mirrored.
        np.testing.assert_array_equal(batch.audio[b, :, 0].numpy(), clip.mels[start : start + T])


def test_mirrored_flow_still_carries_a_frame_onto_the_next():
    # A bright column moving right by 2 px moves left by 2 px in the mirror image.
    faces = np.zeros((6, SIZE, SIZE, 3), np.uint8)
    for t in range(6):
        faces[t, :, 4 + 2 * t] = 255
    flow = np.zeros((5, SIZE, SIZE, 2), np.float16)
    flow[..., 0] = 2.0
    clip = _clip("a", 6, 1)
    clip.faces, clip.flow, clip.valid = faces, flow, np.ones((5, SIZE, SIZE), bool)
    batch = generator_batch([clip], np.random.default_rng(0), 1, WINDOW, flip=1.0)
    column = lambda frame: int(np.argmax(frame[0, 0].numpy().sum(0)))  # noqa: E731
    first, second = column(batch.target[0, :, 0:1]), column(batch.target[0, :, 1:2])
    assert second == first + int(batch.flow[0, 0, 0, 0, 0]) and int(batch.flow[0, 0, 0, 0, 0]) == -2


def test_colour_jitter_scales_a_window_and_its_reference_alike_and_keeps_the_lower_half_black():
    clips = [_clip("a", 9, 1), _clip("b", 12, 2)]
    plain = generator_batch(clips, np.random.default_rng(5), 6, WINDOW)
    jittered = generator_batch(clips, np.random.default_rng(5), 6, WINDOW, color_jitter=0.2)
    H = SIZE
    assert float(jittered.faces.min()) >= 0.0 and float(jittered.faces.max()) <= 1.0
    assert torch.equal(jittered.faces[:, :3, :, H // 2 :], torch.zeros_like(jittered.faces[:, :3, :, H // 2 :]))
    changed = 0
    for b in range(6):
        # Where nothing saturates, each channel of the target and of the reference is scaled by one factor.
        for c in range(3):
            t0, t1 = plain.target[b, c], jittered.target[b, c]
            r0, r1 = plain.faces[b, 3 + c], jittered.faces[b, 3 + c]
            keep = (t0 > 0.05) & (t1 < 0.999)
            gain = float((t1[keep] / t0[keep]).median())
            assert 0.81 < gain < 1.23
            torch.testing.assert_close(t1[keep], (t0 * gain)[keep], atol=2e-6, rtol=1e-5)
            keep_r = (r0 > 0.05) & (r1 < 0.999)
            torch.testing.assert_close(r1[keep_r], (r0 * gain)[keep_r], atol=2e-6, rtol=1e-5)
            changed += abs(gain - 1) > 1e-3
    assert changed >= 12
    # What the generator must produce is the jittered target.
    torch.testing.assert_close(jittered.faces[:, :3, :, : H // 2], jittered.target[:, :, :, : H // 2])


def test_generator_batch_without_flow_and_is_a_function_of_the_generator():
    clips = [_clip("a", 9, 1), _clip("b", 12, 2)]
    batch = generator_batch(clips, np.random.default_rng(0), 3, WINDOW, with_flow=False)
    assert batch.flow is None and batch.valid is None
    again = generator_batch(clips, np.random.default_rng(0), 3, WINDOW, with_flow=False)
    assert torch.equal(batch.faces, again.faces) and torch.equal(batch.audio, again.audio)
    moved = batch.to(torch.device("cpu"))
    assert moved.flow is None and torch.equal(moved.target, batch.target)


def test_syncnet_batch_pairs_windows_with_their_own_audio_or_audio_at_least_min_shift_away():
    clips = [_clip("a", 9, 1), _clip("b", 12, 2)]
    T, H = WINDOW, SIZE
    mel, faces, labels = syncnet_batch(clips, np.random.default_rng(3), batch_size=40, window=T, min_shift=2)
    assert mel.shape == (40, 1, 80, 16) and faces.shape == (40, 3 * T, H // 2, H) and labels.shape == (40,)
    assert set(labels.tolist()) == {0.0, 1.0}
    for b in range(40):
        halves = np.rint(faces[b].reshape(T, 3, H // 2, H).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        c, start = _locate(clips, halves[0], rows=slice(H // 2, None))
        clip = clips[c]
        np.testing.assert_array_equal(halves, clip.faces[start : start + T, H // 2 :])
        audio_start = [t for t in range(len(clip)) if np.array_equal(clip.mels[t], mel[b, 0].numpy())]
        assert len(audio_start) == 1
        if labels[b] == 1:
            assert audio_start[0] == start
        else:
            assert abs(audio_start[0] - start) >= 2 and audio_start[0] + T <= len(clip)


def test_syncnet_batch_calls_a_pair_in_sync_when_the_clip_has_no_window_far_enough():
    # Six frames give window starts 0 and 1: none is two frames from another.
    mel, _, labels = syncnet_batch([_clip("short", 6, 4)], np.random.default_rng(0), 16, window=5, min_shift=2)
    assert labels.tolist() == [1.0] * 16


def test_lower_half_masked_blanks_rows_from_the_middle_down_and_leaves_its_input_alone():
    frames = np.ones((2, 5, 3, 3), dtype=np.uint8)
    masked = lower_half_masked(frames)
    # H = 5: rows 0 and 1 stay, rows 2, 3 and 4 (from 5 // 2 on) are blanked.
    assert masked[:, :2].min() == 1 and masked[:, 2:].max() == 0
    assert frames.min() == 1
