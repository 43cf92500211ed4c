"""The one error of bad input, raised wherever the input is read or checked."""

from __future__ import annotations


class InputError(Exception):
    """The input cannot be analysed; the message is one line meant for the user."""
