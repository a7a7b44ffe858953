"""The dedup pipeline: raw -> clean, each dedup key once, exactly once across crashes.

``state`` is the pure decision logic and changelog op format; ``table`` backs it with a Faust
table; ``app`` builds the Faust app and its agent; ``replay`` re-injects raw records. The
guarantee and the sizing are in ``README.md`` next to this file.
"""
