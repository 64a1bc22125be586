"""OCC storage: a replicated, content-addressed chunk store with LCRS health sketches (pure library)."""
