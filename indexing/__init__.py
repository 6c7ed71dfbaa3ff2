"""Indexing and search: clip and caption embeddings, aesthetic scores, the Milvus store, search, dedup.

Plain Python (no Ray): workflows/index.py maps the embedding stages with Ray Data. See docs/indexing.md.
"""
