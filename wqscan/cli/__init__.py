"""The command line: parse the arguments, call the API, format the result.

`main.py` is the entry point; `commands.py` lists the commands; `watch_commands.py`,
`scan_commands.py` and `queue_commands.py` run them; `arguments.py` builds their options;
`common.py` opens the database they name; `text.py` prints names and tables.
"""
from .main import main

__all__ = ["main"]
