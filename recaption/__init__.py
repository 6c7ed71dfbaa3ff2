"""Recaption: dense and short captions for kept clips, from a vision-language model or from metadata."""
