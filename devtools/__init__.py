"""Development and test tooling: local services, the demo, sample data, worker subprocesses.

Not part of the product's runtime; only the CLI's ``services`` and ``demo`` commands, tests and bench use it.
"""
