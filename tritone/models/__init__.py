"""tritone/models"""
