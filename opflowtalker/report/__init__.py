"""What the chapters show, computed from the pipeline's outputs: every number in their sentences comes
from the run it describes, whichever way the run came out. Each module serves one kind of claim."""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
