"""moodwire.sinks"""
