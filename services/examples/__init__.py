"""A worked example: a 20-member sharing operation and a generator for a year of its data."""
