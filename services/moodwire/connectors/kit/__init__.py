"""The connector test kit: local servers that speak each source's protocol (replaying
captures or fixtures) and the contract checks every connector must pass.

Importable by third-party connectors (``from moodwire.connectors.kit import contract``);
nothing here is used by the pipeline itself.
"""
