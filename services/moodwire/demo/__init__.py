"""moodwire.demo: ``moodwire demo`` and what it runs on the local stack.

``runner`` (the command: stack, children, live summary), ``local_pipeline`` (the worker and
ingest child processes, also used by the benchmarks), ``live_view`` (the terminal summary)
and ``lag`` (the processors' consumer lag as the demo shows it).
"""
