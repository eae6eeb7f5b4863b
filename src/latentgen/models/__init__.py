"""Stage 2, models: the architectures and the forward passes (hooks, batched predictions)."""
