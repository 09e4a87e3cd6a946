"""dreamstill.backend: everything that needs torch."""
