"""recstack: the modern industrial recommendation stack in one package.

Flow: data -> semantic_ids -> retrieval -> ranking -> page (see DESIGN.md in the docs).
"""

__version__ = "0.1.0"
