"""provision: set up and audit the GPU workstations of a research lab over SSH."""

__version__ = "0.1.0"
