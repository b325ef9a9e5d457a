"""Imported by every Python process of a mutation run (benchmarks/mutation_run.py puts
this directory on PYTHONPATH). While mutmut maps which test calls which function, a child
the test started (`python -m wqscan`, a git hook) writes the functions it calls to a file
of its own in $WQSCAN_MUTATION_HITS; mutation_hits.py adds them to the test's calls."""
import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats" and os.environ.get("WQSCAN_MUTATION_HITS"):
    import mutmut.mutation.trampoline

    _seen: set[str] = set()
    _path = os.path.join(os.environ["WQSCAN_MUTATION_HITS"], f"{os.getpid()}.hits")

    def _record(name: str, caller: str | None = None) -> None:
        if name not in _seen:
            _seen.add(name)
            with open(_path, "a") as f:
                f.write(name + "\n")

    mutmut.mutation.trampoline.record_trampoline_hit = _record
