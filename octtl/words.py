"""Counts in words for what octtl prints: "1 run", "2 runs", never "1 runs"."""


def count(n: int, noun: str, plural: str = None) -> str:
    """`n` and the noun, singular for one (plural: noun + 's' unless given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
