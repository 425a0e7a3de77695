"""The pure domain: cleaning, scales, entities, aggregates, windows and typed records.

Nothing here does I/O or imports another satpulse package; every other layer builds on these functions.
"""
