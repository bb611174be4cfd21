"""Data: the catalog FITS format, simulated galaxies, importers, SDSS fetching, fractals, training tensors."""
