"""The study's commands, in the order `dvc repro` runs them: the one list the CLI and the book use.

``dvc.yaml`` holds the stages themselves (a test checks that it calls exactly these commands); the
CLI records the wall time of the ones in :data:`TIMED` (``metrics/stage_times.json``) and the
study chapter charts them in :data:`PIPELINE_ORDER`.

:data:`PARAMS` says which groups of ``params.yaml`` each command reads. The CLI hands a command
those groups and refuses it any other, and each stage of ``dvc.yaml`` depends on exactly those
groups (or keys inside them) and on the same groups of the profile, so a change to one parameter
reruns only the stages that read it (tests hold ``dvc.yaml`` to this).
"""
from __future__ import annotations

__all__ = ["PIPELINE_ORDER", "TIMED", "PARAMS", "HD_PARAMS", "NOTEBOOK_PARAMS", "params_of"]

PIPELINE_ORDER = ("corpus", "corpus-quality", "lipreading-corpus", "preprocess", "model-cost", "train-flow", "eval-flow", "train-syncnet",
                  "train-sync-judge", "train-lipreader", "train-generator", "evaluate-reference", "evaluate", "tables",
                  "plots", "explorer-shot", "notebook", "book")

# The stages that compute the study; the plots, the screenshot, the chapters and the book only show it.
TIMED = frozenset(PIPELINE_ORDER) - {"plots", "explorer-shot", "notebook", "book"}

# The groups of params.yaml each command reads.
PARAMS = {
    "corpus": ("corpus",),
    "corpus-quality": (),                    # the corpus's own corpus.json says how it was built
    # Its mouth crops are cut as preprocessing cuts faces, then as the lip reader cuts mouths.
    "lipreading-corpus": ("corpus", "lipreading_corpus", "preprocess", "train_lipreader"),
    "preprocess": ("dataset", "preprocess"),
    "model-cost": ("model_cost",),
    "train-flow": ("train_flow",),
    "eval-flow": ("train_flow",),
    "train-syncnet": ("train_syncnet",),
    "train-sync-judge": ("train_sync_judge",),
    "train-lipreader": ("dataset", "train_lipreader"),
    "train-generator": ("generators",),
    "evaluate-reference": ("dataset", "evaluate"),
    "evaluate": ("evaluate", "generators"),  # the variant's label
    "tables": ("generators",),
    "plots": ("generators",),                # the runs whose curves it writes
    "explorer-shot": ("notebooks",),
    "notebook": ("notebooks",),
    "book": (),
}
# What a command reads more under --hd: params.yaml's hd group (its overrides, its rows) and, for
# the evaluation, the crop size that names a row.
HD_PARAMS = {"evaluate": ("preprocess",)}
# The groups a chapter's notebook reads from params.yaml itself, beside its notebooks.<name> settings.
NOTEBOOK_PARAMS = {
    "flow": ("generators",),                 # the OFS loss's flow network
    "models": ("generators",),               # the generators' sizes
    "study": ("generators", "corpus", "dataset"),
    "hdtf": ("generators", "corpus", "preprocess", "hd"),
}


def params_of(command: str, hd: bool = False, notebook: str | None = None) -> tuple[str, ...]:
    """The groups of params.yaml ``opflowtalker [--hd] <command>`` reads (with ``notebook``: the
    chapter it executes reads too), in the order of :data:`PARAMS`."""
    groups = list(PARAMS[command])
    if hd:
        groups += [*HD_PARAMS.get(command, ()), "hd"]
    if notebook is not None:
        groups += NOTEBOOK_PARAMS.get(notebook, ())
    return tuple(dict.fromkeys(groups))
