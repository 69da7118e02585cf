"""Build script: metadata lives in pyproject.toml; this file only declares the Cython twin.

The extension `middlebox._cwire` is the compiled twin of the pure-Python wire layer
(`middlebox/wire/`). It is required: a build without it is a broken build, so it is not
marked optional. `MIDDLEBOX_PURE_PYTHON=1` selects the reference at run time instead.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "middlebox._cwire",
        ["cext/_wire.pyx"],
        extra_compile_args=["-O2"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
