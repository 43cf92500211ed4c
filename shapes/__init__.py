"""Locust load shapes for cachestorm runs."""

from __future__ import annotations

from .ramp import StepRamp, without_writers

__all__ = ["StepRamp", "without_writers"]
