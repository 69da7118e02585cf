"""Build script: metadata lives in pyproject.toml; this file only declares the Cython twins.

* `middlebox._cwire` is the compiled twin of the pure-Python wire layer (`middlebox/wire/`),
  from `cext/_wire.pyx`; its C declarations shared with the core twin (the `Packet` fields)
  are in `middlebox/_cwire.pxd`, where Cython looks for them by module name.
* `middlebox._cnfq` is the daemon's per-packet path in C (`cext/_nfq.pyx`): it cimports
  NetfilterQueue's own declarations (`netfilterqueue/_impl.pxd`, found on sys.path, so
  NetfilterQueue must be installed to build it) and links libnetfilter_queue.
* `middlebox._ccore.flow` and `middlebox._ccore.converter` are the compiled twin of the core,
  compiled from the core's own sources (`middlebox/core/flow.py`, `converter.py`) with the C
  types of their augmenting `.pxd` files (aiohttp compiles its websocket reader this way).
  Cython takes a module's name from where its file sits, so the sources are copied to
  `build/ccore/middlebox/_ccore/` first (never into the tree); the converter imports the flow
  module relatively, so each copy finds its own twin.

Both are required: a build without them is a broken build, so they are not marked optional.
`MIDDLEBOX_PURE_PYTHON=1` selects the pure-Python reference at run time instead.
"""
import os
import shutil

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CORE_TWIN = ("flow", "converter")  # middlebox/core/<name>.py + .pxd -> middlebox._ccore.<name>
CORE_STAGE = os.path.join("build", "ccore")


def _stage_core_twin() -> list[Extension]:
    """Copy the core sources the twin is compiled from (only when changed, so that cythonize
    sees an up-to-date copy as up to date) and declare their extensions."""
    pkg = os.path.join(HERE, CORE_STAGE, "middlebox", "_ccore")
    os.makedirs(pkg, exist_ok=True)
    for init in (os.path.join(pkg, "..", "__init__.py"), os.path.join(pkg, "__init__.py")):
        if not os.path.exists(init):
            open(init, "w").close()
    extensions = []
    for name in CORE_TWIN:
        for ext in (".py", ".pxd"):
            src = os.path.join(HERE, "middlebox", "core", name + ext)
            dst = os.path.join(pkg, name + ext)
            with open(src, "rb") as f:
                text = f.read()
            if not os.path.exists(dst) or open(dst, "rb").read() != text:
                shutil.copyfile(src, dst)
        extensions.append(Extension(
            f"middlebox._ccore.{name}",
            [os.path.join(CORE_STAGE, "middlebox", "_ccore", name + ".py")],
            extra_compile_args=["-O2"],
        ))
    return extensions


DIRECTIVES = {
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
}

extensions = cythonize(
    [Extension("middlebox._cwire", ["cext/_wire.pyx"], extra_compile_args=["-O2"])],
    language_level=3,
    compiler_directives=DIRECTIVES,
) + cythonize(
    _stage_core_twin(),
    language_level=3,
    include_path=[HERE],  # middlebox/_cwire.pxd: the wire twin's Packet, cimported by the core
    # the .pxd files give the types; annotations in the spec are documentation only
    compiler_directives={**DIRECTIVES, "annotation_typing": False, "binding": False},
) + cythonize(
    # Cython's default checks stay on here: it indexes what a core (maybe a faulty one) returns
    [Extension("middlebox._cnfq", ["cext/_nfq.pyx"], extra_compile_args=["-O2"],
               libraries=["netfilter_queue"])],
    language_level=3,
)

setup(ext_modules=extensions)
