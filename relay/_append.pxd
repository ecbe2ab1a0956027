"""C-level declarations of relay/_append.pyx, for relay/_media.pyx to cimport (the pacer's tick
hands the caller's audio to the model's socket without the interpreter)."""


cdef class AppendWriter:
    cdef object _socket                  # the session's current socket, or None
    cdef bint _direct                    # a JsonWebSocket: its plain-TCP writes are done here
    cdef public long long direct_writes  # appends written here with one write(2)

    cpdef bint append(self, bytes audio, object stamp) except -1
