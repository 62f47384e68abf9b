"""Time-series storage behind one interface: embedded (DuckDB) and PostgreSQL backends."""
