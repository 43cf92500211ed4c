"""Locust load shapes for cachestorm runs."""

from __future__ import annotations

from .open import OpenModel, open_model_problem
from .ramp import StepRamp
from .soak import Soak
from .spike import Spike
from .stages import Stage, Stages, StagesError, load_stages

__all__ = [
    "OpenModel",
    "Soak",
    "Spike",
    "Stage",
    "Stages",
    "StagesError",
    "StepRamp",
    "load_stages",
    "open_model_problem",
]
