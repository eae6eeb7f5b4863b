"""latentgen: latent generalization during memorization.

Probes (MASC, VeLPIC), the VeLPIC weight transfer, and the experiment engine
behind the Snakemake workflow that rebuilds the figures of Ketha & Ramaswamy.
"""

__version__ = "0.1.0"

# latentgen.probe / latentgen.transfer (your own model: latentgen.external.api), imported on first use
# so that `import latentgen` stays free of torch (the Snakefile imports the package)
_API = {"probe": "latentgen.external.api", "transfer": "latentgen.external.api"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'latentgen' has no attribute {name!r}")
