"""The local stack: a broker, PostgreSQL and Redis from Python wheels, under one state dir.

``manager`` is the entry point (``up``/``down``/``status``); one module per server.
"""
