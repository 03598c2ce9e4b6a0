"""What each ``opflowtalker`` command does: ``run_<command>(args)`` reads the parameters and paths the
command line gave it, calls the package and writes the stage's outputs; ``cli.py`` parses the command
line and calls it. A user's mistake found here is a :class:`UserError`, one line on stderr.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import OpFlowTalkerError

__all__ = ["UserError", "stage_params"]  # and run_<command> for each command


class UserError(OpFlowTalkerError):
    """Bad input found by the CLI itself (every package error derives from OpFlowTalkerError too)."""


def stage_params(args: argparse.Namespace) -> dict:
    """The groups of params.yaml this command reads (stages.PARAMS), the HDTF-shaped half's values
    merged in under --hd; any other group is refused."""
    from .params import StageParams, load_params
    from .stages import params_of

    hd = getattr(args, "hd", False)
    return StageParams(load_params(args.params, hd=hd), params_of(args.command, hd), f"opflowtalker {args.command}")


def run_assets(args: argparse.Namespace) -> None:
    from .assets import fetch_assets

    root = fetch_assets(args.root, force=args.force)
    print(f"assets ready in {root}")


def run_notebook(args: argparse.Namespace) -> None:
    from .notebooks import execute_notebook

    params = stage_params(args).get("notebooks", {}).get(Path(args.notebook).stem, {})
    execute_notebook(args.notebook, args.output, params)
    print(f"executed {args.notebook} -> {args.output}")


def run_book(args: argparse.Namespace) -> None:
    from .notebooks import build_book

    html = build_book(args.book, args.output)
    print(f"book built: {html / 'index.html'}")


def run_fingerprints(args: argparse.Namespace) -> None:
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


def run_corpus(args: argparse.Namespace) -> None:
    import json

    from .corpus.build import CorpusParams, build_corpus
    from .params import from_mapping

    params = from_mapping(CorpusParams, stage_params(args).get("corpus"), "params.yaml: corpus")
    summary = build_corpus(args.out, params)
    print(json.dumps(summary))


def run_corpus_quality(args: argparse.Namespace) -> None:
    from .corpus.quality import MIN_MOTION, corpus_quality
    from .files import write_json_atomic

    min_motion = MIN_MOTION if args.min_motion is None else args.min_motion
    if min_motion < 0:
        raise UserError(f"--min-motion takes a distance in pixels, 0 or more, got {min_motion:g}")
    if not (args.corpus / "corpus.json").is_file():
        raise UserError(f"no corpus at {args.corpus} (no corpus.json): run `dvc repro corpus` first")
    result = corpus_quality(args.corpus, min_motion)
    write_json_atomic(args.out, result)
    print(f"quality of {len(result['clips'])} clips and the framing of {len(result['framing'])} identities "
          f"written to {args.out}")


def run_lipreading_corpus(args: argparse.Namespace) -> None:
    import json

    from .corpus.build import CorpusParams
    from .corpus.lipreading import CropSettings, LipReadingCorpusParams, build_lipreading_corpus
    from .params import from_mapping
    from .preprocess import PreprocessParams
    from .training.lipreader import LipReaderTrainParams

    params = stage_params(args)
    corpus = from_mapping(CorpusParams, params.get("corpus"), "params.yaml: corpus")
    lipreading = from_mapping(LipReadingCorpusParams, params.get("lipreading_corpus"), "params.yaml: lipreading_corpus")
    # The crops are cut as preprocessing cuts faces, then as the lip reader cuts mouths.
    prep = from_mapping(PreprocessParams, params.get("preprocess"), "params.yaml: preprocess")
    reader = from_mapping(LipReaderTrainParams, params.get("train_lipreader"), "params.yaml: train_lipreader")
    crop = CropSettings(face_size=int(prep.size), pads=prep.pads, smooth=int(prep.smooth),
                        **reader.model_config().mouth_crop())
    print(json.dumps(build_lipreading_corpus(args.out, corpus, lipreading, crop)))


def run_preprocess(args: argparse.Namespace) -> None:
    import json

    from .params import from_mapping
    from .preprocess import PreprocessParams, preprocess_dataset

    params = stage_params(args)
    dataset = params.get("dataset") or {}
    summary = preprocess_dataset(dataset.get("kind", "corpus"), dataset.get("root", "data/corpus"), args.out,
                                 from_mapping(PreprocessParams, params.get("preprocess"), "params.yaml: preprocess"))
    print(json.dumps(summary))


def run_model_cost(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from .files import write_json_atomic
    from .models.cost import ModelCostParams, measure_costs
    from .params import from_mapping

    params = from_mapping(ModelCostParams, stage_params(args).get("model_cost"), "params.yaml: model_cost")
    write_json_atomic(args.out, measure_costs(**asdict(params)))
    print(f"model costs written to {args.out}")


def flow_params(args: argparse.Namespace):
    from .flow.train import FlowTrainParams
    from .params import from_mapping

    return from_mapping(FlowTrainParams, stage_params(args).get("train_flow"), "params.yaml: train_flow")


def run_train_flow(args: argparse.Namespace) -> None:
    from .flow.train import train_flow_network

    log = train_flow_network(args.network, args.prepared, args.out, flow_params(args), args.run_dir)
    args.trained_seconds = log["seconds"]
    if not is_main_process():
        return
    print(f"{args.network}: {log['steps']} steps in {log['seconds']:.0f} s, final loss "
          f"{log['history']['loss'][-1]:.3f}")


def run_eval_flow(args: argparse.Namespace) -> None:
    from .files import write_json_atomic
    from .flow.checkpoints import NETWORKS
    from .flow.train import evaluate_estimators

    malformed = [item for item in args.checkpoint if "=" not in item]
    if malformed:
        raise UserError(f"--checkpoint takes NAME=PATH, got {malformed[0]!r}")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    for name, path in checkpoints.items():
        if name not in NETWORKS:
            raise UserError(f"--checkpoint names {name!r}, which is not a flow network ({', '.join(NETWORKS)})")
        if not Path(path).is_file():
            raise UserError(f"--checkpoint {name}: no checkpoint at {path}")
    result = evaluate_estimators(args.prepared, checkpoints, flow_params(args))
    write_json_atomic(args.out, result)
    for name, row in result["estimators"].items():
        print(f"{name:>12}: EPE {row['epe']:.3f} px, mouth {row['epe_mouth']:.3f} px")


def is_main_process() -> bool:
    """False on the other ranks of a torchrun job, which train but do not report."""
    return os.environ.get("RANK", "0") == "0"


def run_train_syncnet(args: argparse.Namespace) -> None:
    from .params import from_mapping
    from .training.syncnet import SyncNetTrainParams, train_syncnet

    params = from_mapping(SyncNetTrainParams, stage_params(args).get("train_syncnet"), "params.yaml: train_syncnet")
    log = train_syncnet(args.prepared, args.out, params, args.run_dir or Path("runs/syncnet"))
    args.trained_seconds = log["seconds"]
    if not is_main_process():
        return
    last = log["history"]["eval"][-1]
    print(f"syncnet: {log['steps']} steps in {log['seconds']:.0f} s; validation accuracy {last['accuracy']:.3f}, "
          f"BCE {last['bce']:.3f}")


def run_train_sync_judge(args: argparse.Namespace) -> None:
    from .params import from_mapping
    from .training.sync_judge import SyncJudgeTrainParams, train_sync_judge

    params = from_mapping(SyncJudgeTrainParams, stage_params(args).get("train_sync_judge"),
                          "params.yaml: train_sync_judge")
    log = train_sync_judge(args.prepared, args.out, params, args.run_dir or Path("runs/sync_judge"))
    args.trained_seconds = log["seconds"]
    if not is_main_process():
        return
    val = log["val"]
    print(f"sync judge: {log['steps']} steps in {log['seconds']:.0f} s; validation clips with the best offset "
          f"within one frame of 0: {val['offset_within_1']:.2f}, of the shift: {val['shifted_offset_within_1']:.2f}; "
          f"LSE-C {val['lse_c']:.3f}")


def run_train_generator(args: argparse.Namespace) -> None:
    from .training.generator import train_generator, variant_params, warm_start_of, warm_up_params

    group = stage_params(args).get("generators") or {}
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
    if not is_main_process():
        return
    last = log["history"]["eval"][-1]
    print(f"{args.variant}: {log['steps']} steps in {log['seconds']:.0f} s; "
          + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))


def run_train_lipreader(args: argparse.Namespace) -> None:
    from .params import from_mapping
    from .training.lipreader import LipReaderTrainParams, train_lipreader

    params = stage_params(args)
    train = from_mapping(LipReaderTrainParams, params.get("train_lipreader"), "params.yaml: train_lipreader")
    dataset = params.get("dataset") or {}
    log = train_lipreader(args.prepared, dataset.get("root", "data/corpus"), args.out, train,
                          args.run_dir or Path("runs/lipreader"), kind=dataset.get("kind", "corpus"),
                          extra=args.extra)
    args.trained_seconds = log["seconds"]
    if not is_main_process():
        return
    print(f"lipreader: {log['steps']} steps in {log['seconds']:.0f} s; test WER {log['test']['wer']:.3f} "
          f"(chance: {log['chance']['majority_wer']:.3f} always saying the commonest words), CER {log['test']['cer']:.3f}")


def eval_params(params: dict):
    from .evaluate import EvalParams
    from .params import from_mapping

    return from_mapping(EvalParams, params.get("evaluate"), "params.yaml: evaluate")


def run_evaluate_reference(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_reference
    from .files import write_json_atomic

    params = stage_params(args)
    rows = evaluate_reference(args.prepared, params.get("dataset") or {}, args.judge, args.lipreader,
                              args.reference, eval_params(params), expert_path=args.expert)
    for name, row in rows.items():
        write_json_atomic(args.out / f"{name}.json", row)
        print(f"{row['label']}: LSE-C {row['lse_c']:.3f} [{row['ci']['lse_c'][0]:.3f}, {row['ci']['lse_c'][1]:.3f}], "
              f"best offset within one frame of {row['expected_offset']} on {row['offset_ok']:.0%} of clips, "
              f"lip-reading WER {row['wer_script']:.3f} against the script ({row['seconds']:.0f} s)")
    print(f"speech recogniser: WER {rows['ground_truth']['speech_wer_vs_script']:.3f} against the script")


def run_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_generator
    from .files import write_json_atomic

    from .training.generator import all_variants

    params = stage_params(args)
    variants = all_variants(params.get("generators") or {})
    if args.variant not in variants:
        raise UserError(f"no generator variant {args.variant!r}; params.yaml defines {', '.join(variants)}")
    label = (variants[args.variant] or {}).get("label", args.variant)
    if args.hd:
        kind = hd_rows(params).get(args.variant)
        if kind is None:
            raise UserError(f"{args.variant} is not a row of the HDTF-shaped half (hd.variants, hd.resized)")
        size = int(params["preprocess"]["size"])
        label += ", 96 px resized" if kind == "resized" else f", {size} px"
    row = evaluate_generator(args.variant, label, args.checkpoint, args.prepared, args.reference, args.judge,
                             args.lipreader, eval_params(params), args.frames)
    write_json_atomic(args.out, row)
    print(f"{args.variant}: PSNR {row['psnr']:.2f}, SSIM {row['ssim']:.3f}, LSE-C {row['lse_c']:.3f}, "
          f"M-LMD {row['m_lmd']:.3f}, lip-reading WER {row['wer_script']:.3f} against the script "
          f"({row['seconds']:.0f} s)")


def run_tables(args: argparse.Namespace) -> None:
    from .files import write_json_atomic
    from .tables import LAYOUT_HD, build_tables

    from .training.generator import all_variants

    params = stage_params(args)
    variants = all_variants(params.get("generators") or {})
    try:
        tables = (build_tables(args.results, variants, args.controls, LAYOUT_HD, hd_rows(params)) if args.hd
                  else build_tables(args.results, variants, args.controls))
    except ValueError as error:
        raise UserError(str(error)) from None
    write_json_atomic(args.out, tables)
    print(f"tables written to {args.out}")


def hd_rows(params: dict) -> dict[str, str]:
    from .tables import hd_rows
    from .training.generator import all_variants

    group = params.get("generators") or {}
    try:
        return hd_rows(params.get("hd") or {}, all_variants(group), group.get("variants") or {})
    except ValueError as error:
        raise UserError(str(error)) from None


def run_plots(args: argparse.Namespace) -> None:
    from .plots import PlotsError, training_runs, write_curves

    try:
        summary = write_curves(args.models, args.out, training_runs(stage_params(args)), args.flow_epe)
    except PlotsError as error:
        raise UserError(str(error)) from None
    missing = summary["missing"]
    print(f"curves of {len(summary['written'])} training runs written to {args.out}"
          + (f"; not found, skipped: {', '.join(missing)}" if missing else ""))


def run_explorer_shot(args: argparse.Namespace) -> None:
    import tempfile

    from .browser import BrowserError, run_in_jupyterlab
    from .files import write_json_atomic
    from .notebooks import NotebookError, parameterized_copy

    settings = dict(stage_params(args).get("notebooks", {}).get(args.notebook.stem, {}))
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


def run_generate(args: argparse.Namespace) -> None:
    from .generate import GenerateOptions, fixed_mmap_threshold, generate

    fixed_mmap_threshold()  # peak memory independent of the video's length
    # Wav2Lip's "--box -1 -1 -1 -1" means: detect.
    box = tuple(args.box) if args.box and -1 not in args.box else None
    options = GenerateOptions(pads=tuple(args.pads), resize_factor=args.resize_factor, fps=args.fps,
                              static=args.static, nosmooth=args.nosmooth, box=box, crop=tuple(args.crop),
                              rotate=args.rotate, batch_size=args.batch_size, precision=args.precision,
                              track=not args.no_tracking, progress=not args.quiet)
    summary = generate(args.face, args.audio, args.checkpoint, args.outfile, options)
    print(f"wrote {summary['outfile']}: {summary['frames']} frames at {summary['fps']:g} fps, face in "
          f"{summary['faces']} ({summary['passed_through']} passed through unchanged), "
          f"{summary['frames_per_second']:.1f} frames/s")


def run_landmarks(args: argparse.Namespace) -> None:
    import json

    from .landmarks import LandmarkDetector
    from .video import read_image

    image = read_image(args.image)
    faces = LandmarkDetector(args.backend).detect(image)
    if not faces:
        raise UserError(f"no face found in {args.image}")
    print(json.dumps([{"box": list(f.box), "landmarks": f.landmarks.round(2).tolist()} for f in faces]))
