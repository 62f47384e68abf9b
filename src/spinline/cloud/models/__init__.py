"""The model registry: versioned models, their status and history, desired state per mill, the TUF
update repository the edges fetch from, and the canary judge (see ``registry`` and ``tuf_repo``)."""
