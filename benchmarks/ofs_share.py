"""What the OFS loss adds to a generator training step on the CPU.

    python benchmarks/ofs_share.py [--flow raft-small|flownet] [--iters 12] [--threads 2] [--repeats 5]

One step of the small OpFlowTalker generator (``width=0.25``) on a batch of 2 windows of T=5 frames
at 96 px: forward, loss, backward, Adam update; once with the L1 loss alone and once with L1 + OFS,
the OFS term's flow computed by a frozen network (RAFT-small by default, at 12 iterations; it resizes
96 px faces to 128 px inside; or FlowNet2-S at full width) between the 4 consecutive pairs of each
window, with gradients back through the network into the frames. Untrained weights: the cost does not
depend on them. Timings run on ``--threads`` threads (2, the machine the study is sized for); the
median of ``--repeats`` steps of each kind, taken in turns after a warm-up step of each, is
reported.
"""
import argparse
import statistics
import sys
import time

import torch

from opflowtalker.flow.flownet import FlowNet2S
from opflowtalker.flow.raft import RAFT
from opflowtalker.losses import freeze, l1_loss, ofs_loss
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig, count_parameters

BATCH, WINDOW, SIZE = 2, 5, 96


def timed_steps(steps: dict, repeats: int) -> dict:
    """Median milliseconds of each step function over ``repeats`` calls, after a warm-up call of each.

    The steps take turns, so that a slow spell of the machine (another process on the two cores)
    falls on both rather than on one of them.
    """
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flow", choices=["raft-small", "flownet"], default="raft-small")
    ap.add_argument("--iters", type=int, default=12, help="RAFT iterations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    generator = OpFlowTalker(OpFlowTalkerConfig(width=0.25)).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-4)
    if args.flow == "raft-small":
        flow_net, flow_kwargs = freeze(RAFT(small=True)), {"iters": args.iters}
    else:
        flow_net, flow_kwargs = freeze(FlowNet2S()), {}

    audio = torch.randn(BATCH, WINDOW, 1, 80, 16)
    faces = torch.rand(BATCH, 6, WINDOW, SIZE, SIZE)
    faces[:, :3, :, SIZE // 2:] = 0
    target = torch.rand(BATCH, 3, WINDOW, SIZE, SIZE)
    gt_flow = torch.randn(BATCH, WINDOW - 1, 2, SIZE, SIZE)
    gt_valid = torch.ones(BATCH, WINDOW - 1, SIZE, SIZE, dtype=torch.bool)
    mouth = torch.zeros(BATCH, WINDOW, SIZE, SIZE, dtype=torch.bool)
    mouth[..., 60:80, 30:66] = True

    def step(with_ofs: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        frames, aux = generator(audio, faces)
        loss = l1_loss(frames, target) + 1e-3 * aux["kl"]
        if with_ofs:
            loss = loss + ofs_loss(frames, gt_flow, gt_valid, mouth, flow_net, flow_kwargs=flow_kwargs)
        loss.backward()
        optimizer.step()

    ms = timed_steps({"without": lambda: step(False), "with": lambda: step(True)}, args.repeats)
    without, with_ofs = ms["without"], ms["with"]
    print("command:", " ".join([sys.executable] + sys.argv))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"generator: OpFlowTalker width 0.25, {count_parameters(generator) / 1e6:.2f}M parameters; "
          f"batch {BATCH} x {WINDOW} frames x {SIZE} px")
    name = f"RAFT-small, {args.iters} iterations" if args.flow == "raft-small" else "FlowNet2-S"
    print(f"OFS flow network: {name}, {sum(p.numel() for p in flow_net.parameters()) / 1e6:.2f}M parameters "
          f"(frozen), {BATCH * (WINDOW - 1)} pairs per step")
    print(f"step without OFS: {without:8.0f} ms")
    print(f"step with OFS:    {with_ofs:8.0f} ms")
    print(f"OFS share of the step: {(with_ofs - without) / with_ofs:.0%} "
          f"(the step is {with_ofs / without:.1f}x as long)")


if __name__ == "__main__":
    main()
