"""Entry points, one per job, all through one runner (``zwz_ray.cli.Job``):
``python -m pipelines.<job> [--config FILE] [--set key=value ...] [--print-config | --explain]``."""
