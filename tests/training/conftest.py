"""Makes ``trainer_toy`` importable by name, also in the worker processes the trainer spawns (they inherit sys.path)."""
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
