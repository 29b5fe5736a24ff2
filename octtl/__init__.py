"""octtl: transfer learning for macular fluid detection in OCT B-scans with limited data."""

__version__ = "0.1.0"
