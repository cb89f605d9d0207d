"""The one error the local stack raises: a single line naming the cause and the fix."""

from __future__ import annotations


class StackError(RuntimeError):
    """Starting or stopping a local server failed; ``str(err)`` is meant for the user."""
