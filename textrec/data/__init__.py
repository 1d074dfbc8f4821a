"""Data sources and the one HDF5 line store they all write."""
