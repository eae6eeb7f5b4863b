"""latentgen: latent generalization during memorization.

Probes (MASC, VeLPIC), the VeLPIC weight transfer, and the experiment engine
behind the Snakemake workflow that rebuilds the figures of Ketha & Ramaswamy.
"""

__version__ = "0.1.0"
