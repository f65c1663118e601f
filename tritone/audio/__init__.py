"""tritone/audio"""
