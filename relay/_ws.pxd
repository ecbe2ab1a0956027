"""C-level declarations of relay/_ws.pyx, for other extensions to cimport (relay/_append.pyx
builds each input_audio_buffer.append frame from the caller's audio without the interpreter)."""

from libc.stdint cimport uint8_t


cdef bytes append_frame_from(const uint8_t *audio, Py_ssize_t size)
