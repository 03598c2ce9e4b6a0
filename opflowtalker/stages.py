"""The study's commands, in the order `dvc repro` runs them: the one list the CLI and the book use.

``dvc.yaml`` holds the stages themselves (a test checks that it calls exactly these commands); the
CLI records the wall time of the ones in :data:`TIMED` (``metrics/stage_times.json``) and the
study chapter charts them in :data:`PIPELINE_ORDER`.
"""
from __future__ import annotations

__all__ = ["PIPELINE_ORDER", "TIMED"]

PIPELINE_ORDER = ("corpus", "lipreading-corpus", "preprocess", "model-cost", "train-flow", "eval-flow", "train-syncnet",
                  "train-sync-judge", "train-lipreader", "train-generator", "evaluate-reference", "evaluate", "tables",
                  "plots", "explorer-shot", "notebook", "book")

# The stages that compute the study; the plots, the screenshot, the chapters and the book only show it.
TIMED = frozenset(PIPELINE_ORDER) - {"plots", "explorer-shot", "notebook", "book"}
