"""time.monotonic() for relay's extensions, without the interpreter: cimported by
relay/_engine.pyx (the pacer's and the receive loop's clock) and relay/_append.pyx (an
append's latency from its oldest caller packet). Inline only: nothing to build or import."""

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline double monotonic() noexcept nogil:
    """time.monotonic() (the same clock, CLOCK_MONOTONIC), in seconds."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9
