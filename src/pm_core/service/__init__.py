"""Application service: signal handling, recovery, runtime and leader jobs."""
