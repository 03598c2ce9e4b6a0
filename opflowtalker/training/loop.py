"""One training loop for every model of the study: checkpoints, resume, DDP, mixed precision, logs.

``fit`` is nanoGPT's loop with the bookkeeping a study needs:

* **Determinism that survives a kill.** The batch of step ``s`` on rank ``r`` is drawn from
  ``numpy.random.default_rng([seed, s, r])`` and torch's generator is reseeded from the same three
  numbers before the step, so a step's randomness depends on nothing but its number. Every
  ``checkpoint_every`` steps the model, the Adam moments and the log are written atomically to
  ``run_dir/resume.safetensors``; a run that is killed and started again continues from there and
  ends with the same weights as one that never stopped. The resume file remembers a fingerprint of
  the parameters, the metadata and the source of the files that define the model's class, the loss
  and the batches, so a changed configuration, or a changed model or loss, starts afresh instead of
  resuming (a finished run whose network has since changed is not passed off as the new one's).
* **Multi-GPU.** Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1 in the environment) the
  model is wrapped in ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs); each rank draws its own
  ``batch_size / N`` samples and the gradients are averaged, so N ranks train on the same global batch
  size as one. Only rank 0 writes files.
* **Mixed precision** on GPUs: bf16 autocast where the GPU has it, else fp16 with a gradient scaler.
* **A learning rate that settles.** With ``decay_steps`` > 0 the rate is ``lr`` until the last
  ``decay_steps`` steps and then falls along a half cosine to nearly zero at the end (Adam at a
  constant rate keeps jittering around a minimum); with ``warmup_steps`` > 0 it first rises
  linearly to ``lr`` (the flow networks, trained from scratch at a high rate, need it); a
  different warm-up is a different run (it is part of the resume fingerprint). The steps before
  the decay are those of a constant-rate run, so a run trained at a constant rate resumes into a
  longer one that decays at its end; a checkpoint written inside one decay resumes only under the
  same schedule.
* **A shared first part.** ``warm_start`` names the state file of another run (written by a fit
  with ``save_state``: the model, the Adam moments, the step and the log). A run that has no
  resume checkpoint of its own continues from that state instead of step 0: variants that differ
  only in their loss then share their first steps, the same steps each would have taken alone
  (a step's batch and randomness depend on its number only). The caller says which runs may share
  one; the loop checks that the state is for fewer steps and under a schedule that allows it.
* **Logs.** The loss terms every ``log_every`` steps go to the returned log (written next to the
  checkpoint as JSON, the file the book plots) and to dvclive under ``run_dir/live``; in a
  terminal a progress bar over the steps (:mod:`opflowtalker.progress`) shows the last logged loss.

The caller provides what differs between models: the model, ``loss_fn(model, batch, step)``
returning a dict of scalar tensors whose ``"loss"`` is minimised, and ``sample_batch(rng, n)``
drawing ``n`` samples from the step's generator ``rng``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..files import write_json_atomic
from ..fingerprints import code_digest
from ..models.checkpoints import save_safetensors
from ..progress import progress
from .state import load_resume, load_warm_start, save_resume

__all__ = ["LoopParams", "Distributed", "distributed", "fit", "run_identity", "to_device", "step_seed", "source_digest"]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class LoopParams:
    steps: int
    batch_size: int  # the global batch: split over the ranks under torchrun
    lr: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    threads: int = 2  # CPU threads per process
    precision: str = "auto"  # "auto": bf16/fp16 autocast on CUDA, fp32 on the CPU
    clip: float = 0.0  # gradient-norm clipping; 0 is off
    decay_steps: int = 0  # the last steps, over which the rate falls along a half cosine; 0: constant
    warmup_steps: int = 0  # the first steps, over which the rate rises linearly to lr; 0: none

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("need steps >= 0, batch_size >= 1, checkpoint_every >= 1 and log_every >= 1")
        if not 0 <= self.decay_steps <= self.steps:
            raise ValueError(f"need 0 <= decay_steps <= steps, got decay_steps {self.decay_steps} for {self.steps} steps")
        if not 0 <= self.warmup_steps <= self.steps - self.decay_steps:
            raise ValueError(f"need 0 <= warmup_steps <= steps - decay_steps, got warmup_steps {self.warmup_steps} "
                             f"for {self.steps} steps, {self.decay_steps} of them decaying")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def decay_from(self) -> int | None:
        """The step at which the rate starts to fall (None: it never does)."""
        return self.steps - self.decay_steps if self.decay_steps else None

    def rate(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        if step < self.warmup_steps:  # step i of the warm-up runs at lr * (i + 1) / (n + 1)
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        start = self.decay_from
        if start is None or step < start:
            return self.lr
        # Step i of the decay runs at lr * (1 + cos(pi * (i + 1) / (n + 1))) / 2: below lr from its
        # first step, above zero at its last.
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (step - start + 1) / (self.decay_steps + 1)))

    @classmethod
    def of(cls, train_params) -> "LoopParams":
        """The loop's share of a model's training parameters (a dataclass with the same field names)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dataclasses.asdict(train_params).items() if k in names})


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed() -> Distributed:
    """This process's place in a ``torchrun`` job (a job of one without torchrun).

    Joins the process group on first call when ``WORLD_SIZE`` > 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(rank, world, local, device)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank (numpy's batch generator uses the same triple)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors, dicts/lists/tuples of them, or objects with a ``to(device)`` method, on ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _autocast(precision: str, device: torch.device) -> tuple[Any, torch.dtype | None]:
    """(context factory, dtype) for the forward pass."""
    if precision == "auto":
        if device.type != "cuda":
            return contextlib.nullcontext, None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype


CADENCE = ("steps", "checkpoint_every", "log_every", "eval_every", "threads")
# The schedule's length is checked apart from the fingerprint (see ``state.schedule_allows``): a
# constant-rate run may grow into one that decays at its end.
SCHEDULE = ("decay_steps",)


def run_identity(params: Any) -> dict:
    """A training dataclass's fields without its length and cadence: what makes a run what it is.
    Asking for more steps, or logging more often, then resumes the run instead of restarting it."""
    return {k: v for k, v in asdict(params).items() if k not in CADENCE}


def _defining_file(obj: Any) -> str | None:
    """The source file of the module that defines ``obj`` (a function, a class, or an instance's
    class; a ``functools.partial``'s function), or None where there is none (a builtin)."""
    obj = getattr(obj, "func", obj)
    owner = obj if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj) else type(obj)
    module = inspect.getmodule(owner)
    try:
        return inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        return None


def source_digest(*objects: Any) -> str:
    """A digest of the code of the source files that define ``objects`` (see :func:`_defining_file`):
    it changes when what one of those files does changes (not its docstrings or comments, as
    :func:`opflowtalker.fingerprints.code_digest` reads code), and not when they are reached from elsewhere."""
    digest = hashlib.sha256()
    for path in sorted({p for p in map(_defining_file, objects) if p}):
        digest.update(Path(path).name.encode() + b"\0" + code_digest(Path(path).read_text(encoding="utf-8")).encode())
    return digest.hexdigest()[:16]


def _fingerprint(name: str, params: LoopParams, metadata: dict, code: str = "") -> str:
    # What must match for a resume to continue the same run. `steps` may grow (train longer) and
    # the logging cadence may change without invalidating the run; the same keys are dropped from
    # the model's own training parameters in ``metadata``.
    dropped = CADENCE + SCHEDULE
    keyed = {k: v for k, v in asdict(params).items() if k not in dropped}
    if isinstance(metadata.get("train_params"), dict):
        metadata = {**metadata, "train_params": {k: v for k, v in metadata["train_params"].items()
                                                 if k not in dropped}}
    text = json.dumps({"name": name, "params": keyed, "metadata": metadata, "code": code}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _live(run_dir: Path, resume: bool):
    from dvclive import Live

    try:
        return Live(str(run_dir / "live"), resume=resume, report=None, save_dvc_exp=False, dvcyaml=None)
    except Exception as error:  # dvclive inspects the git/DVC repository around it and can refuse
        log.warning("dvclive logging is off: %s", error)  # (e.g. a repository without commits);
        return None  # the JSON log beside the checkpoint is written either way


def _mean_over_ranks(values: dict[str, float], dist: Distributed) -> dict[str, float]:
    if dist.world_size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / dist.world_size for k, v in zip(keys, t.tolist())}


def fit(name: str, model: nn.Module, loss_fn: Callable[[nn.Module, Any, int], dict[str, torch.Tensor]],
        sample_batch: Callable[[np.random.Generator, int], Any], out: str | Path, run_dir: str | Path,
        params: LoopParams, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        metadata: dict | None = None, warm_start: str | Path | None = None, save_state: bool = False) -> dict:
    """Train ``model`` for ``params.steps`` steps; write it to ``out`` (safetensors) and its log to
    ``out`` with suffix ``.json``; return the log.

    ``sample_batch(rng, per_rank_batch_size)`` gives one batch (tensors, or dicts/tuples of them) on
    the CPU; ``loss_fn(model, batch, step)`` runs on the device under autocast and returns scalar
    tensors, ``"loss"`` among them. ``evaluate(model)`` (rank 0, eval mode, no grad) returns numbers
    logged every ``eval_every`` steps and at the end. ``metadata`` is stored in the checkpoint (put
    what is needed to rebuild the model there) and is part of the resume fingerprint.
    ``warm_start``: a state file to continue from when this run has no resume checkpoint of its own
    (see the module's text). ``save_state``: ``out`` holds the whole loop state (model, Adam moments,
    step, log and ``metadata``), a warm start for other runs, instead of the bare weights.

    It is one function, longer than most, because its parts share the loop's state (model,
    optimiser, scaler, step, random generator, log, the process group) in the order a resume
    relies on; split, each piece would take and hand back all of it.
    """
    out, run_dir = Path(out), Path(run_dir)
    metadata = dict(metadata or {})
    dist = distributed()
    if dist.device.type == "cpu":
        torch.set_num_threads(params.threads)
    if params.batch_size % dist.world_size:
        raise ValueError(f"batch_size {params.batch_size} does not split over {dist.world_size} processes")
    per_rank = params.batch_size // dist.world_size

    model = model.to(dist.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, betas=(0.9, 0.999))
    autocast, amp_dtype = _autocast(params.precision, dist.device)
    scaler = torch.amp.GradScaler(dist.device.type) if amp_dtype == torch.float16 else None
    fingerprint = _fingerprint(name, params, metadata, source_digest(model, loss_fn, sample_batch))
    resume_path = run_dir / "resume.safetensors"
    resumed = load_resume(resume_path, model, optimizer, scaler, fingerprint, params)
    warmed = None
    if resumed is None and warm_start is not None:
        warmed = load_warm_start(Path(warm_start), model, optimizer, scaler, params)
        log.info("%s: continuing the shared first %d steps of %s", name, warmed[0], warm_start)
    start, history, seconds, pending, warm = resumed or warmed or (0, {"step": []}, 0.0, {"sums": {}, "count": 0}, None)
    if resumed:
        log.info("%s: resuming at step %d from %s", name, start, resume_path)
    train_model: nn.Module = model
    if dist.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=True)
    live = _live(run_dir, resume=bool(resumed)) if dist.main else None

    def run_evaluation(step: int) -> None:
        if evaluate is None or not dist.main:
            return
        model.eval()
        with torch.no_grad():
            scores = evaluate(model)
        model.train()
        history.setdefault("eval", []).append({"step": step, **scores})
        if live is not None:
            live.step = step
            for key, value in scores.items():
                live.log_metric(f"eval/{key}", value, plot=True)

    sums: dict[str, float] = dict(pending["sums"])
    count = int(pending["count"])
    clock = time.perf_counter()
    # The bar counts steps and shows the mean loss of the last log point: it computes nothing.
    steps = progress(range(start, params.steps), total=params.steps, initial=start, desc=name, unit="step")
    for step in steps:
        rng = np.random.default_rng([params.seed, step, dist.rank])
        torch.manual_seed(step_seed(params.seed, step, dist.rank))
        for group in optimizer.param_groups:
            group["lr"] = params.rate(step)
        batch = to_device(sample_batch(rng, per_rank), dist.device)
        with autocast():
            terms = loss_fn(train_model, batch, step)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: the loss became {loss.detach().item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if params.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), params.clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        count += 1

        done = step + 1
        if params.eval_every and done % params.eval_every == 0 and done != params.steps:
            run_evaluation(done)  # before the log point, so dvclive files both under step `done`
        if done % params.log_every == 0 or done == params.steps:
            means = _mean_over_ranks({k: v / count for k, v in sums.items()}, dist)
            history["step"].append(done)
            for key, value in means.items():
                history.setdefault(key, []).append(value)
            if live is not None:
                live.step = done
                for key, value in means.items():
                    live.log_metric(f"train/{key}", value)
                live.next_step()
            sums, count = {}, 0
            steps.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)
        if done % params.checkpoint_every == 0 and done != params.steps and dist.main:
            now = time.perf_counter()
            seconds, clock = seconds + now - clock, now
            save_resume(resume_path, model, optimizer, scaler, done, history, seconds, fingerprint,
                         {"sums": sums, "count": count}, params.decay_from, warm_start=warm)

    steps.close()
    if not history.get("eval") or history["eval"][-1]["step"] != params.steps:
        run_evaluation(params.steps)
    seconds += time.perf_counter() - clock
    result = {"name": name, "steps": params.steps, "resumed_from": start, "seconds": seconds,
              "warm_start": warm,
              "world_size": dist.world_size, "device": str(dist.device.type),
              "precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32",
              "params": asdict(params), "history": history}
    if dist.main:
        save_resume(resume_path, model, optimizer, scaler, params.steps, history, seconds, fingerprint,
                     {"sums": {}, "count": 0}, params.decay_from, warm_start=warm)
        if save_state:
            save_resume(out, model, optimizer, scaler, params.steps, history, seconds, fingerprint,
                         {"sums": {}, "count": 0}, params.decay_from, metadata, warm_start=warm)
        else:
            save_safetensors(model, out, metadata={**metadata, "train": {"name": name, "steps": params.steps,
                                                                          "seed": params.seed}})
        write_json_atomic(out.with_suffix(".json"), result)
        if live is not None:
            live.end()
    if dist.world_size > 1:
        torch.distributed.barrier()
    return result
