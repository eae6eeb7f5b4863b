"""Stage 4, probing: activations (in memory or HDF5), the MASC/VeLPIC subspace probes, the baselines,
the probe families and the probe jobs (one checkpoint, one training run)."""
