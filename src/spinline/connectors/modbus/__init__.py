"""Modbus TCP: pure codec and block planner, and the pymodbus-backed connector."""
