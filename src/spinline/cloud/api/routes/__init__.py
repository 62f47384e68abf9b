"""HTTP routes (thin: parse, check scope through ``api.deps``, call a service, shape the answer)."""
