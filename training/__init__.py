"""Training: shards, bucketed loader, spatiotemporal autoencoder, video DiT, flow matching, trainer.

Imports torch, numpy and pyarrow only (see DESIGN.md), so it runs on a GPU box that has nothing else.
"""
