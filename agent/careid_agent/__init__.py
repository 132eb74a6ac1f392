"""The workstation agent: reads the Care Identity card over PC/SC and signs challenges."""

__version__ = "0.1.0"
