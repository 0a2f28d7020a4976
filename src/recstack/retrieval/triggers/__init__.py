"""Trigger selection for U2I2I retrieval: CAPTS (VAM look-ahead labels + CATR routing) and baselines."""
