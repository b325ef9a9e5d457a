"""Builds the compiled scanner `wqscan._scan_c` from `ext/_scan_c.pyx`.

A failed build fails the install, unless WQSCAN_NO_EXTENSIONS=1 asks for the
pure-Python scanner: nothing silently ships the slow path.
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PURE = os.environ.get("WQSCAN_NO_EXTENSIONS", "") not in ("", "0")
HINT = ("wqscan: building the compiled scanner failed. Install a C compiler and the "
        "Python headers, or ask for the pure-Python install with WQSCAN_NO_EXTENSIONS=1.")


class LoudBuildExt(build_ext):
    """build_ext that names the way out when the compiler fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            print(HINT, file=sys.stderr)
            raise


def extensions() -> list:
    if PURE:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.exit(HINT)
    ext = Extension("wqscan._scan_c", ["ext/_scan_c.pyx"], include_dirs=["ext"],
                    depends=["ext/wq_match.h", *glob.glob("ext/*.pxi")],
                    extra_compile_args=["-O2"])
    return cythonize([ext], language_level=3, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": LoudBuildExt})
