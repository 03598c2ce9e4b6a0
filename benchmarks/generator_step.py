"""What a generator training step costs, what the OFS loss takes of it, and what is cheaper for free.

    python benchmarks/generator_step.py [--variant full] [--repeats 7] [--threads 2] [--profile]

The study's own step (``params.yaml``: ``generators``, the variant's parameters; its training
windows from ``data/prepared``; its trained flow networks from ``models/flow``; the SyncNet expert
when the variant's sync weight asks for it), timed as forward, Eq. 8, backward and Adam update,
against cheaper settings of the OFS term measured in the same run:

* the step with the OFS term off (so the OFS share of a step is its time minus that, over its time);
* other numbers of refinement iterations of a recurrent flow network (``flow_iters``);
* the frame pairs resized for the flow network (``flow_size``), where that changes what the network
  computes: RAFT and GMA work at 128 px at least (``opflowtalker.flow.raft.MIN_SIDE``), so for them a
  size below that costs the same as the frames' own;
* the lighter flow network (FlowNet2-S, ``flownet``) where its checkpoint is in ``--flow-dir``;
* bf16 autocast on the CPU (the loop's ``precision: bf16``), with and without the OFS term.

Each setting is timed in turns with the others, after a warm-up: the fastest of ``--repeats`` steps,
since on a shared machine other processes only ever add time. Each is shown beside what the flow chapter asks of an OFS loss: on the busiest window of a held-out clip,
the loss of each wrong motion (one frame late, mouth frozen, played backwards) over that of the real
frames, with the same network run at the same settings (and precision). A setting keeps the ranking when the real
frames still score lowest (every ratio above 1). Prints one table, then today's share and the
steps per second in fp32 and bf16; ``--profile`` adds torch.profiler's operators of today's step.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from opflowtalker.flow.checkpoints import load_trained_network
from opflowtalker.flow.raft import RecurrentFlowNetwork, working_size
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
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="print the operators that take today's step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    today = variant_params(load_params(args.params).get("generators") or {}, args.variant)
    if not today.uses_ofs:
        sys.exit(f"variant {args.variant} trains without the OFS loss: nothing to measure")
    networks: dict[str, torch.nn.Module] = {}

    def network(name: str) -> torch.nn.Module:
        if name not in networks:
            networks[name] = freeze(load_trained_network(Path(args.flow_dir) / f"{name}.safetensors"))
        return networks[name]

    def recurrent(name: str) -> bool:  # RAFT and GMA refine; FlowNet does not
        return isinstance(network(name), RecurrentFlowNetwork)

    def cheaper_sizes(name: str) -> list[int]:
        own = working_size(today.image_size, today.image_size) if recurrent(name) else (today.image_size,) * 2
        return [s for s in (64, 48) if s < today.image_size
                and (not recurrent(name) or working_size(s, s) != own)]

    expert = freeze(load_model_checkpoint(args.expert)) if today.sync_weight > 0 else None
    train = load_split(args.prepared, "train", with_flow=True, min_frames=max(today.window, 6), limit=16)
    batch = generator_batch(train, np.random.default_rng(0), today.batch_size, today.window, with_flow=True)

    settings: dict[str, dict] = {"today": {}, "no OFS term": {"ofs_weight": 0.0}}
    if recurrent(today.flow_network):
        settings.update({f"flow_iters {k}": {"flow_iters": k} for k in (6, 4, 3, 2, 1) if k != today.flow_iters})
    settings.update({f"flow_size {s}": {"flow_size": s} for s in cheaper_sizes(today.flow_network)})
    lighter = "flownet"
    if lighter != today.flow_network and (Path(args.flow_dir) / f"{lighter}.safetensors").exists():
        settings[lighter] = {"flow_network": lighter}
        settings.update({f"{lighter}, flow_size {s}": {"flow_network": lighter, "flow_size": s}
                         for s in cheaper_sizes(lighter)})
    bf16 = {"today, bf16 autocast": {}, "no OFS term, bf16 autocast": {"ofs_weight": 0.0}}

    def stepper(overrides: dict, bf16: bool = False):
        params = dataclasses.replace(today, **overrides)
        torch.manual_seed(params.seed)
        model = build_generator(params).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        loss_fn = GeneratorLoss(params, expert, network(params.flow_network) if params.uses_ofs else None)
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
    steps.update({name: stepper(o, bf16=True) for name, o in bf16.items()})
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
    ms = {name: 1000 * min(t) for name, t in times.items()}

    test = load_split(args.prepared, "test", with_flow=True, min_frames=12, limit=1)[0]
    clip = {"faces": test.faces, "flow": test.flow, "valid": test.valid, "landmarks": test.landmarks}
    print(f"variant {args.variant}: batch {today.batch_size} x {today.window} frames at {today.image_size} px, "
          f"flow network {today.flow_network} (flow_iters {today.flow_iters}, flow_size {today.flow_size or 'as is'}), "
          f"ofs_windows {today.ofs_windows or 'all'}, {args.threads} threads, fastest of {args.repeats}; "
          f"held-out clip {read_split_keys(args.prepared, 'test')[0]}")
    print(f"{'setting':<28} {'ms/step':>8} {'steps/s':>8} {'vs today':>9} {'OFS share':>9} {'first loss':>10}  "
          + "  ".join(f"{m:>16}" for m in WRONG_MOTIONS))
    for name, value in ms.items():
        params = dataclasses.replace(today, **{**settings, **bf16}[name])
        # The OFS share is against the step of the same precision without it.
        base = ms["no OFS term, bf16 autocast" if name in bf16 else "no OFS term"]
        shown = f"{100 * (value - base) / value:>8.0f}%" if params.uses_ofs else f"{'-':>9}"
        if params.uses_ofs:
            kwargs = {"iters": params.flow_iters} if recurrent(params.flow_network) else {}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name in bf16):
                losses = ofs_of_motions(network(params.flow_network), clip, flow_size=params.flow_size or None,
                                        flow_kwargs=kwargs)
            ratios = "  ".join(f"{losses[m] / losses['real frames']:>15.2f}x" for m in WRONG_MOTIONS)
        else:
            ratios = "  ".join(f"{'-':>16}" for _ in WRONG_MOTIONS)
        print(f"{name:<28} {value:>8.0f} {1000 / value:>8.2f} {ms['today'] / value:>8.2f}x {shown} "
              f"{first_loss[name]:>10.4f}  {ratios}")
    share = (ms["today"] - ms["no OFS term"]) / ms["today"]
    print(f"today's step {ms['today']:.0f} ms, {ms['no OFS term']:.0f} ms without the OFS term: "
          f"the OFS term takes {100 * share:.0f}% of a step")
    print(f"steps per second: fp32 {1000 / ms['today']:.2f}, bf16 autocast {1000 / ms['today, bf16 autocast']:.2f}")

    if args.profile:
        step, _ = steps["today"]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
