"""Locust load shapes for cachestorm runs."""

from __future__ import annotations

from .ramp import StepRamp

__all__ = ["StepRamp"]
