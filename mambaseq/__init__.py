"""mambaseq: character-level Mamba models for genomes and time series."""
__version__ = "0.1.0"
