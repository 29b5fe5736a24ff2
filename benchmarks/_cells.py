"""Table cells the benchmark scripts share (imported as a sibling: the scripts run as `python benchmarks/X.py`)."""

import statistics


def mean_sd(values) -> str:
    """'mean (sd)' over the defined values, three decimals; '-' when none is defined."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ({spread:.3f})"
