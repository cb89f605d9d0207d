"""The aggregates: per-minute rollups in Postgres (the truth) and their Redis copy.

- ``keys``: the Redis key layout and the bucket type, in one place;
- ``rollup``: the ``rollups`` rows, counted in the transaction that stores the scores;
- ``redis_copy``: writes committed rows into Redis (absolute values, by revision) and
  reads the copy back;
- ``writer``: what the processor and rescore call after a commit (rebuilds a lost copy);
- ``rebuild``: ``moodwire aggregates rebuild``.
"""
