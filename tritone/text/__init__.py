"""tritone/text"""
