"""The ``moodwire`` command line: one thin module per command group, no logic here."""
