"""moodwire.training: training the GRU and its MiniLM teachers, evaluation, model cards.

Training-time only: it reads ``../shared/data`` and may need the ``train`` extra. It imports
the serving package ``moodwire.model`` (artifact, network, text, engine); nothing of the
serving side imports it back.
"""
