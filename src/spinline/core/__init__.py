"""Shared kernel: site model, measurement batch, wire format, units, errors. Pure, no I/O."""
