"""pm_cli: the ``pm`` command line (thin: parses, calls bootstrap or pm_core, renders)."""
