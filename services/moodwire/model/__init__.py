"""moodwire.model: serving the GRU: tokenizer, network, artifact, the batched inference engine.

Usable alone: it imports nothing of the pipeline (Kafka, databases, Faust); training lives in
``moodwire.training``, which imports this package and is never imported by it.
"""
