"""The model's classes, in the order of its outputs (and of the data's label ids).

Defined in ``moodwire.labels`` (which the wire codec shares); re-exported here so the
serving package reads whole on its own.
"""

from moodwire.labels import LABELS

__all__ = ["LABELS"]
