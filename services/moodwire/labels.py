"""The sentiment classes, in the order of the model's outputs (and of the data's label ids).

A leaf module of its own: the wire codec (``records``) and the serving model
(``model.labels`` re-exports it) both need the order, and neither may import the other.
"""

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
