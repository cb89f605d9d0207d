"""moodwire.connectors"""
