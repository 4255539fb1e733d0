"""The web layer: imports the core, never the reverse."""
