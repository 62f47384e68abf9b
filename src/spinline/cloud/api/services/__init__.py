"""Use cases behind the API routes (no HTTP here): the tree, values, fleet status, site registration."""
