"""Build the Cython extensions of relay with optimisation on."""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILE_ARGS = ["-O3", "-fno-strict-aliasing"]

extensions = [
    Extension("relay._g711", ["relay/_g711.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension("relay._rtp", ["relay/_rtp.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension("relay._ws", ["relay/_ws.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension("relay._append", ["relay/_append.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension("relay._media", ["relay/_media.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension("relay._events", ["relay/_events.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension("relay.sim._sim_audio", ["relay/sim/_sim_audio.pyx"],
              extra_compile_args=COMPILE_ARGS),
    Extension("relay.sim._sim_rtp", ["relay/sim/_sim_rtp.pyx"], extra_compile_args=COMPILE_ARGS),
]
# recvmmsg/sendmmsg are Linux's; elsewhere relay/media.py sends and receives one at a time
if sys.platform.startswith("linux"):
    for name in ("_udp", "_engine"):
        extensions.append(Extension(f"relay.{name}", [f"relay/{name}.pyx"],
                                    extra_compile_args=COMPILE_ARGS,
                                    define_macros=[("_GNU_SOURCE", "1")]))
    extensions.append(Extension("relay.sim._ws_reader", ["relay/sim/_ws_reader.pyx"], extra_compile_args=COMPILE_ARGS))

# RELAY_ONLY_EXT=_g711 builds one extension alone (handy while another one is being edited).
only = os.environ.get("RELAY_ONLY_EXT")
if only:
    extensions = [ext for ext in extensions if ext.name.endswith(only)]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
