"""Prepackaged model runtimes that need no user class."""
