"""The command line: parse the arguments, call the API, format the result.

`commands.py` holds the command table and `main`; each group of commands has a module of
its own; `arguments.py` the parser; `text.py` how names and tables are printed.
"""
from .commands import main

__all__ = ["main"]
