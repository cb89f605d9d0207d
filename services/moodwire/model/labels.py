"""The model's classes, in the order of its outputs (and of the data's label ids)."""

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
