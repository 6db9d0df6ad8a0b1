"""risbench: benchmark image descriptors for reverse image search (Gaillard et al. 2018)."""

__version__ = "0.1.0"
