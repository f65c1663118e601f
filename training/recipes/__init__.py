"""Reproducible training recipes (`tritone train demo`)."""
