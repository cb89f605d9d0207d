"""moodwire.stack"""
