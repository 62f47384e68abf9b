"""The demo: the whole platform on a simulated mill, on embedded defaults (no server to install)."""
