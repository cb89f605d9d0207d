"""moodwire.db"""
