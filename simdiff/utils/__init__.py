"""Small shared utilities: atomic I/O, progress bars, run records."""
