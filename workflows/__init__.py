"""Workflows: the `rushes` command line and the Ray Data pipelines that join the stages."""
