"""moodwire: a streaming sentiment pipeline for social media."""

__version__ = "0.1.0"
