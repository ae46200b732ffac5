"""zwz-ray: Region-to-Image Distillation on Ray."""

__version__ = "0.1.0"
