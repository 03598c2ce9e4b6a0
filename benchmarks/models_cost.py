"""Parameters, FLOPs and CPU time per frame of the OpFlowTalker generator next to Wav2Lip's.

    python benchmarks/models_cost.py [--sizes 96 256] [--widths 1.0 0.25] [--threads 2] [--repeats 3]

The same measurement is the pipeline's `model_cost` stage (`opflowtalker model-cost`), whose JSON the
book's model chapter reads.
"""
import argparse
import sys

from opflowtalker.models.cost import measure_costs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 256])
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    result = measure_costs(args.sizes, args.widths, args.threads, args.repeats, train_sizes=args.sizes)
    print("command:", " ".join([sys.executable] + sys.argv))
    print(f"torch {result['torch']}, {result['threads']} threads, {result['processor']}")
    print(f"{'model':>12} {'size':>4} {'width':>5} {'params':>9} {'GFLOP/frame':>11} {'infer ms/frame':>14} "
          f"{'train ms/frame':>14}")
    for row in result["rows"]:
        train = f"{row['train_ms_per_frame']:14.1f}" if row["train_ms_per_frame"] is not None else f"{'-':>14}"
        print(f"{row['model']:>12} {row['size']:4d} {row.get('width', 1.0):5.2f} {row['params'] / 1e6:8.2f}M "
              f"{row['gflop_per_frame']:11.3f} {row['infer_ms_per_frame']:14.1f} {train}")


if __name__ == "__main__":
    main()
