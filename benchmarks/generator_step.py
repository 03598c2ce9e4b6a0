"""What a generator training step costs, what the OFS loss takes of it, and what is cheaper for free.

    python benchmarks/generator_step.py [--variant full] [--repeats 5] [--threads 2]

The study's own step (``params.yaml``: ``generators``, the variant's parameters; its training
windows from ``data/prepared``; its trained flow network from ``models/flow``; the SyncNet expert
when the variant's sync weight asks for it), timed as forward, Eq. 8, backward and Adam update,
against cheaper settings of the OFS term measured in the same run:

* the step with the OFS term off (so the OFS share of today's step is today's minus that);
* fewer refinement iterations of the flow network (``flow_iters``);
* the frame pairs resized for the flow network (``flow_size``);
* bf16 autocast on the CPU (the loop's ``precision: bf16``), with the loss it gives beside fp32's.

Each setting is timed in turns with the others (median of ``--repeats`` steps after a warm-up), and
is shown beside what the flow chapter asks of an OFS loss: on the busiest window of a held-out clip,
the loss of each wrong motion (one frame late, mouth frozen, played backwards) over that of the real
frames, with the same network run at the same settings. A setting is free when the real frames still
score lowest (every ratio above 1). Prints one table; ratios are against today's step.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from opflowtalker.flow.raft import RecurrentFlowNetwork
from opflowtalker.flow.checkpoints import load_trained_network
from opflowtalker.losses import WRONG_MOTIONS, freeze, ofs_of_motions
from opflowtalker.models.registry import load_model_checkpoint
from opflowtalker.params import load_params
from opflowtalker.training.data import generator_batch, load_split, read_split_keys
from opflowtalker.training.generator import GeneratorLoss, build_generator, variant_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="full")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--flow-dir", default="models/flow")
    ap.add_argument("--expert", default="models/syncnet.safetensors")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    today = variant_params(load_params(args.params).get("generators") or {}, args.variant)
    if not today.uses_ofs:
        sys.exit(f"variant {args.variant} trains without the OFS loss: nothing to measure")
    flow_net = freeze(load_trained_network(Path(args.flow_dir) / f"{today.flow_network}.safetensors"))
    expert = freeze(load_model_checkpoint(args.expert)) if today.sync_weight > 0 else None
    train = load_split(args.prepared, "train", with_flow=True, min_frames=max(today.window, 6), limit=16)
    batch = generator_batch(train, np.random.default_rng(0), today.batch_size, today.window, with_flow=True)
    recurrent = isinstance(flow_net, RecurrentFlowNetwork)  # RAFT and GMA refine; FlowNet does not
    settings = {"today": {}, "no OFS term": {"ofs_weight": 0.0}}
    if recurrent:
        settings.update({f"flow_iters {k}": {"flow_iters": k} for k in (4, 3, 2) if k < today.flow_iters})
    settings.update({f"flow_size {s}": {"flow_size": s} for s in (64, 48)})
    if recurrent:
        settings["flow_iters 3, flow_size 64"] = {"flow_iters": 3, "flow_size": 64}

    def stepper(overrides: dict, bf16: bool = False):
        params = dataclasses.replace(today, **overrides)
        torch.manual_seed(params.seed)
        model = build_generator(params).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        loss_fn = GeneratorLoss(params, expert, flow_net if params.uses_ofs else None)
        last = {}

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                terms = loss_fn(model, batch, step=10**6)  # every term on, as late in training
            terms["loss"].backward()
            optimizer.step()
            last["loss"] = float(terms["loss"].detach())
        return step, last

    steps = {name: stepper(o) for name, o in settings.items()}
    steps["bf16 autocast"] = stepper({}, bf16=True)
    first_loss = {}
    for name, (step, last) in steps.items():  # warm-up, and the loss of the same first step
        step()
        first_loss[name] = last["loss"]
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, (step, _) in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}

    test = load_split(args.prepared, "test", with_flow=True, min_frames=12, limit=1)[0]
    clip = {"faces": test.faces, "flow": test.flow, "valid": test.valid, "landmarks": test.landmarks}
    ofs_share = (ms["today"] - ms["no OFS term"]) / ms["today"]
    print(f"variant {args.variant}: batch {today.batch_size} x {today.window} frames at {today.image_size} px, "
          f"flow network {today.flow_network} (flow_iters {today.flow_iters}, flow_size {today.flow_size or 'as is'}), "
          f"ofs_windows {today.ofs_windows or 'all'}, {args.threads} threads, median of {args.repeats}; "
          f"held-out clip {read_split_keys(args.prepared, 'test')[0]}")
    print(f"{'setting':<28} {'ms/step':>8} {'vs today':>9} {'OFS share':>9} {'first loss':>10}  "
          + "  ".join(f"{m:>16}" for m in WRONG_MOTIONS))
    for name, value in ms.items():
        overrides = settings.get(name, {})
        params = dataclasses.replace(today, **overrides)
        # The OFS share is against the fp32 step without it; for bf16 it would mix two precisions.
        share = (value - ms["no OFS term"]) / value if params.uses_ofs and name in settings else None
        if params.uses_ofs:
            kwargs = {"iters": params.flow_iters} if recurrent else {}
            losses = ofs_of_motions(flow_net, clip, flow_size=params.flow_size or None, flow_kwargs=kwargs)
            ratios = "  ".join(f"{losses[m] / losses['real frames']:>15.2f}x" for m in WRONG_MOTIONS)
        else:
            ratios = "  ".join(f"{'-':>16}" for _ in WRONG_MOTIONS)
        shown = f"{100 * share:>8.0f}%" if share is not None else f"{'-':>9}"
        print(f"{name:<28} {value:>8.0f} {ms['today'] / value:>8.2f}x {shown} "
              f"{first_loss[name]:>10.4f}  {ratios}")
    print(f"today the OFS term takes {100 * ofs_share:.0f}% of a step")


if __name__ == "__main__":
    main()
