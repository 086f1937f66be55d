"""Forward processes: one module per process."""
