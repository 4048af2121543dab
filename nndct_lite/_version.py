"""The package version, one copy (read by the package root, the ONNX exporter and the CLI)."""
__version__ = "0.1.0"
