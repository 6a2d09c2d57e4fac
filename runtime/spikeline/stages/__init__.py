"""Pipeline stages. Importing this package registers every built-in stage type."""

from . import events as events
from . import infer as infer
from . import neuro as neuro
from . import signal as signal
from .base import STAGES, Stage, StageError, build_stage

__all__ = ["STAGES", "Stage", "StageError", "build_stage"]
