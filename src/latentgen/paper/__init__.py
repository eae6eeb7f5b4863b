"""Stage 6, the papers' outputs: metrics, figures, tables and claims, each from its registry."""
