"""The cloud: ingest from every mill's edge, time-series storage, the multi-tenant API, KPIs."""
