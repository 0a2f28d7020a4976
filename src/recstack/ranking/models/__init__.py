"""Ranking architectures, one per file, registered under the "ranker" kind."""
