"""spinline: an end-edge-cloud industrial internet platform for spinning mills."""

__version__ = "0.1.0"
