"""moodwire.process"""
