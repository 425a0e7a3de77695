"""Avro schemas of every topic payload (``*.avsc``) and their released versions (``history/``).

Shipped as package data so that an installed satpulse finds them; downstream consumers copy the files.
"""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
