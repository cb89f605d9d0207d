"""The live web page of ``moodwire web``: a FastAPI app with JSON endpoints over Postgres
and the Redis aggregates, and one self-contained page (no CDN: inline SVG charts)."""
