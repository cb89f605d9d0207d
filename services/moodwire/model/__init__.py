"""moodwire.model"""
