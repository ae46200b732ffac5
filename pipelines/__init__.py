"""Entry points, one per job: ``python -m pipelines.<job> --config FILE [--set key=value ...]``."""
