"""Locust load shapes for cachestorm runs."""

from __future__ import annotations

from .ramp import StepRamp
from .soak import Soak
from .spike import Spike
from .stages import Stage, Stages, StagesError, load_stages

__all__ = ["Soak", "Spike", "Stage", "Stages", "StagesError", "StepRamp", "load_stages"]
