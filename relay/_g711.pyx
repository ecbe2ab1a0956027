# cython: language_level=3
"""G.711 codecs, 8/16/24 kHz resampling and frame energy: the per-sample work of relay's audio.

This module owns the conversions between G.711 (u-law, A-law) and PCM16 (signed 16-bit
little-endian mono), the streaming polyphase resampler between 8000, 16000 and 24000 Hz, and the
frame energy measures (RMS, dBov). Its contract is relay/_g711.pyi.

It must not do I/O, log, or keep any state beyond a Resampler's own filter history, and it never
reads or writes outside the buffers it is given, whatever their length or content: bad input
raises ValueError (or TypeError/BufferError for objects that are not contiguous buffers). Loops
run on C pointers and C integers only; the *_into variants allocate nothing. The GIL is held.

How it is built, and why (timings per 20 ms frame on the development machine, a 2-core AMD EPYC
VM; bench/bench_g711.py measures the public functions against audioop):
- G.711 follows ITU-T G.711 as computed by the ITU-T G.191 reference software: a negative
  sample's magnitude is its one's complement (-x - 1), so the quantiser is symmetric about -1/2.
  The per-sample rules below (`_ulaw_encode_sample` ...) fill the tables at import.
- Portable kernels are tables: 256 entries to decode; to encode, 65536 entries indexed by the
  sample itself. Encoding 160 samples: 65536-entry table ~62 ns, 16384-entry table (sample >> 2)
  ~100 ns, segment computed per sample ~480 ns.
- On x86-64 the kernels are SIMD, picked at import (`simd_level()`): SSE2 always, AVX2 when the
  CPU has it. Encoding computes the segment without a table: as a float, the biased magnitude's
  exponent is the segment and the next 4 bits are the mantissa (SSE2 ~35 ns, AVX2 ~16 ns).
  Decoding builds the magnitude arithmetically (vpshufb for 2^segment with AVX2, a float built
  from the code's bits with SSE2). Every level is bit-exact; the tests run them all.
- The resampler is a polyphase FIR: a Kaiser-windowed sinc designed in Python when the first
  Resampler for a rate pair is built (then cached), with Q14 int16 coefficients, int32 sums,
  round-half-up and saturation to int16. Every polyphase branch has a DC gain of exactly 1.0, so
  silence stays digital silence and a constant stays constant. With the cut-off at the lower
  rate's Nyquist frequency, one branch of an interpolator is a pure delay: it is copied. The
  portable kernel is one dot product per output (the compiler vectorises it); the SIMD
  interpolators (8->16, 8->24 kHz) compute 8/16 outputs of a branch at once instead, taps in
  pairs with pmaddwd, so no horizontal sum per output (8->24 kHz frame: ~1.5 us portable,
  ~0.8 us SSE2, ~0.4 us AVX2; audioop.ratecv's linear interpolation takes ~2.9 us).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.math cimport log10, sqrt
from libc.stdint cimport int16_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memmove, memset

import math
import operator

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* PCM16 is little-endian on the wire; these read/write one sample at any alignment. */
    static inline int16_t relay_ld16(const uint8_t *p) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        int16_t v; memcpy(&v, p, 2); return v;
    #else
        return (int16_t)(uint16_t)((unsigned)p[0] | ((unsigned)p[1] << 8));
    #endif
    }
    static inline uint16_t relay_ldu16(const uint8_t *p) { return (uint16_t)relay_ld16(p); }
    static inline void relay_st16(uint8_t *p, int16_t v) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(p, &v, 2);
    #else
        p[0] = (uint8_t)((uint16_t)v & 0xFF); p[1] = (uint8_t)((uint16_t)v >> 8);
    #endif
    }

    /* Q14 accumulator -> PCM16: round half up, saturate. */
    static inline int16_t relay_q14(int32_t acc) {
        acc = (acc + (1 << 13)) >> 14;
        return (int16_t)(acc > 32767 ? 32767 : (acc < -32768 ? -32768 : acc));
    }

    /* Portable kernels: tables for G.711, a plain dot product for the FIR (which the compiler
       vectorises for the baseline instruction set). */
    static void relay_dec_tab(const int16_t *tab, const uint8_t *s, Py_ssize_t n, uint8_t *d) {
        for (Py_ssize_t i = 0; i < n; i++) relay_st16(d + 2 * i, tab[s[i]]);
    }
    static void relay_enc_tab(const uint8_t *tab, const uint8_t *s, Py_ssize_t n, uint8_t *d) {
        for (Py_ssize_t i = 0; i < n; i++) d[i] = tab[relay_ldu16(s + 2 * i)];
    }
    static inline int32_t relay_dot(const int16_t *c, const int16_t *x, Py_ssize_t n) {
        int32_t acc = 0;
        for (Py_ssize_t i = 0; i < n; i++) acc += (int32_t)c[i] * (int32_t)x[i];
        return acc;
    }

    /* One pass of the polyphase filter over buf (history + chunk new samples): writes every
       output whose newest input sample is in the chunk; (q, p) is the next output's newest
       input index and phase. */
    #define RELAY_FIR_LOOP(DOT)                                                           \
        Py_ssize_t q = *q_io; int p = *p_io;                                             \
        while (q < chunk) {                                                              \
            int16_t y = (p == copy_phase) ? buf[q + copy_tap]                            \
                                          : relay_q14(DOT(coef + p * taps, buf + q, taps)); \
            relay_st16(dst, y);                                                          \
            dst += 2;                                                                    \
            p += down;                                                                   \
            while (p >= up) { p -= up; q++; }                                            \
        }                                                                                \
        *q_io = q; *p_io = p;                                                            \
        return dst;

    static uint8_t *relay_fir(const int16_t *buf, const int16_t *coef, Py_ssize_t taps, int up,
                              int down, int copy_phase, Py_ssize_t copy_tap, Py_ssize_t chunk,
                              Py_ssize_t *q_io, int *p_io, uint8_t *dst) {
        RELAY_FIR_LOOP(relay_dot)
    }

    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    /* x86-64: SSE2 is always there; AVX2 is used when the CPU has it (chosen at import). */
    #include <immintrin.h>
    #define RELAY_AVX2 __attribute__((target("avx2")))

    static void relay_init_masks(void);
    static int relay_cpu_level(void) {
        relay_init_masks();
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? 2 : 1;
    }

    /* u-law: b = min(|x| >> 2 + 33, 8191) with |x| in one's complement, computed as
       (|x| +sat 132) >> 2. As a float, b's exponent is the segment + 5 and the 4 bits below
       the leading one are the mantissa, so f = float bits >> 19 = 2112 + (segment << 4 | m).
       The code is that, sign bit set for x < 0, all bits inverted: for 7-bit v, 0xFF ^ v =
       0xFF - v and 0x7F ^ v = 0x7F - v, so code = 2367 - f, minus 128 when x < 0. */
    static inline __m128i relay_ulaw8_sse2(__m128i x) {
        const __m128i z = _mm_setzero_si128();
        __m128i sg = _mm_srai_epi16(x, 15);
        __m128i b = _mm_srli_epi16(_mm_adds_epi16(_mm_xor_si128(x, sg), _mm_set1_epi16(132)), 2);
        __m128i lo = _mm_castps_si128(_mm_cvtepi32_ps(_mm_unpacklo_epi16(b, z)));
        __m128i hi = _mm_castps_si128(_mm_cvtepi32_ps(_mm_unpackhi_epi16(b, z)));
        __m128i f = _mm_packs_epi32(_mm_srli_epi32(lo, 19), _mm_srli_epi32(hi, 19));
        return _mm_add_epi16(_mm_sub_epi16(_mm_set1_epi16(2367), f),
                             _mm_and_si128(sg, _mm_set1_epi16(-128)));
    }
    /* A-law: ix = (|x| in one's complement) >> 4; segment 0 is linear (ix < 16), above it the
       same float trick with bias (127 + 3) << 4; then the sign (set for x >= 0) and 0x55. */
    static inline __m128i relay_alaw8_sse2(__m128i x) {
        const __m128i z = _mm_setzero_si128();
        __m128i sg = _mm_srai_epi16(x, 15);
        __m128i ix = _mm_srli_epi16(_mm_xor_si128(x, sg), 4);
        __m128i adj = _mm_and_si128(_mm_cmpgt_epi16(_mm_set1_epi16(16), ix), _mm_set1_epi16(16));
        __m128i t = _mm_add_epi16(ix, adj);
        __m128i lo = _mm_castps_si128(_mm_cvtepi32_ps(_mm_unpacklo_epi16(t, z)));
        __m128i hi = _mm_castps_si128(_mm_cvtepi32_ps(_mm_unpackhi_epi16(t, z)));
        __m128i c = _mm_packs_epi32(_mm_srli_epi32(lo, 19), _mm_srli_epi32(hi, 19));
        c = _mm_sub_epi16(c, _mm_add_epi16(_mm_set1_epi16(2080), adj));
        c = _mm_or_si128(c, _mm_andnot_si128(sg, _mm_set1_epi16(0x80)));
        return _mm_xor_si128(c, _mm_set1_epi16(0x55));
    }
    static void relay_ulaw_enc_sse2(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                                    uint8_t *d) {
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __m128i c0 = relay_ulaw8_sse2(_mm_loadu_si128((const __m128i *)(s + 2 * i)));
            __m128i c1 = relay_ulaw8_sse2(_mm_loadu_si128((const __m128i *)(s + 2 * i + 16)));
            _mm_storeu_si128((__m128i *)(d + i), _mm_packus_epi16(c0, c1));
        }
        relay_enc_tab(tab, s + 2 * i, n - i, d + i);
    }
    static void relay_alaw_enc_sse2(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                                    uint8_t *d) {
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __m128i c0 = relay_alaw8_sse2(_mm_loadu_si128((const __m128i *)(s + 2 * i)));
            __m128i c1 = relay_alaw8_sse2(_mm_loadu_si128((const __m128i *)(s + 2 * i + 16)));
            _mm_storeu_si128((__m128i *)(d + i), _mm_packus_epi16(c0, c1));
        }
        relay_enc_tab(tab, s + 2 * i, n - i, d + i);
    }

    /* Decoding with SSE2 (no vpshufb): the magnitude (2m + 33) << (e + 2) is built directly
       as a float: exponent e + 7, mantissa bits (2m + 1) << 18, i.e. (e << 4 | m) << 19 plus
       a constant; u-law then subtracts 4 * 33. A-law's segment 0 is taken as segment 1 minus
       256. Codes are widened to 32-bit lanes, 8 at a time. */
    static inline __m128i relay_float_mag8_sse2(__m128i v) {      /* v: 8 x (e << 4 | m) */
        const __m128i z = _mm_setzero_si128();
        const __m128i base = _mm_set1_epi32((134 << 23) | (1 << 18));
        __m128i lo = _mm_add_epi32(_mm_slli_epi32(_mm_unpacklo_epi16(v, z), 19), base);
        __m128i hi = _mm_add_epi32(_mm_slli_epi32(_mm_unpackhi_epi16(v, z), 19), base);
        return _mm_packs_epi32(_mm_cvttps_epi32(_mm_castsi128_ps(lo)),
                               _mm_cvttps_epi32(_mm_castsi128_ps(hi)));
    }
    static inline __m128i relay_apply_sign8_sse2(__m128i mag, __m128i c) {
        __m128i neg = _mm_cmpeq_epi16(_mm_and_si128(c, _mm_set1_epi16(0x80)),
                                      _mm_setzero_si128());
        return _mm_sub_epi16(_mm_xor_si128(mag, neg), neg);
    }
    static inline __m128i relay_ulaw_dec8_sse2(__m128i c) {       /* c: 8 codes as u16 */
        __m128i v = _mm_andnot_si128(c, _mm_set1_epi16(0x7F));
        __m128i mag = _mm_sub_epi16(relay_float_mag8_sse2(v), _mm_set1_epi16(132));
        return relay_apply_sign8_sse2(mag, c);
    }
    static inline __m128i relay_alaw_dec8_sse2(__m128i c) {
        __m128i ix = _mm_and_si128(_mm_xor_si128(c, _mm_set1_epi16(0x55)),
                                   _mm_set1_epi16(0x7F));
        __m128i adj = _mm_and_si128(_mm_cmpgt_epi16(_mm_set1_epi16(16), ix),
                                    _mm_set1_epi16(16));
        __m128i mag = _mm_sub_epi16(relay_float_mag8_sse2(_mm_add_epi16(ix, adj)),
                                    _mm_slli_epi16(adj, 4));
        return relay_apply_sign8_sse2(mag, c);
    }
    #define RELAY_DEC_SSE2(NAME, CORE)                                                      \
    static void NAME(const int16_t *tab, const uint8_t *s, Py_ssize_t n, uint8_t *d) {     \
        const __m128i z = _mm_setzero_si128();                                             \
        Py_ssize_t i = 0;                                                                  \
        for (; i + 16 <= n; i += 16) {                                                     \
            __m128i raw = _mm_loadu_si128((const __m128i *)(s + i));                       \
            _mm_storeu_si128((__m128i *)(d + 2 * i), CORE(_mm_unpacklo_epi8(raw, z)));     \
            _mm_storeu_si128((__m128i *)(d + 2 * i + 16), CORE(_mm_unpackhi_epi8(raw, z)));\
        }                                                                                  \
        relay_dec_tab(tab, s + i, n - i, d + 2 * i);                                       \
    }
    RELAY_DEC_SSE2(relay_ulaw_dec_sse2, relay_ulaw_dec8_sse2)
    RELAY_DEC_SSE2(relay_alaw_dec_sse2, relay_alaw_dec8_sse2)

    RELAY_AVX2 static inline __m256i relay_ulaw16_avx2(__m256i x) {   /* as relay_ulaw8_sse2 */
        const __m256i z = _mm256_setzero_si256();
        __m256i sg = _mm256_srai_epi16(x, 15);
        __m256i b = _mm256_srli_epi16(
            _mm256_adds_epi16(_mm256_xor_si256(x, sg), _mm256_set1_epi16(132)), 2);
        __m256i lo = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_unpacklo_epi16(b, z)));
        __m256i hi = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_unpackhi_epi16(b, z)));
        __m256i f = _mm256_packs_epi32(_mm256_srli_epi32(lo, 19), _mm256_srli_epi32(hi, 19));
        return _mm256_add_epi16(_mm256_sub_epi16(_mm256_set1_epi16(2367), f),
                                _mm256_and_si256(sg, _mm256_set1_epi16(-128)));
    }
    RELAY_AVX2 static inline __m256i relay_alaw16_avx2(__m256i x) {
        const __m256i z = _mm256_setzero_si256();
        __m256i sg = _mm256_srai_epi16(x, 15);
        __m256i ix = _mm256_srli_epi16(_mm256_xor_si256(x, sg), 4);
        __m256i adj = _mm256_and_si256(_mm256_cmpgt_epi16(_mm256_set1_epi16(16), ix),
                                       _mm256_set1_epi16(16));
        __m256i t = _mm256_add_epi16(ix, adj);
        __m256i lo = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_unpacklo_epi16(t, z)));
        __m256i hi = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_unpackhi_epi16(t, z)));
        __m256i c = _mm256_packs_epi32(_mm256_srli_epi32(lo, 19), _mm256_srli_epi32(hi, 19));
        c = _mm256_sub_epi16(c, _mm256_add_epi16(_mm256_set1_epi16(2080), adj));
        c = _mm256_or_si256(c, _mm256_andnot_si256(sg, _mm256_set1_epi16(0x80)));
        return _mm256_xor_si256(c, _mm256_set1_epi16(0x55));
    }
    /* 16-bit codes of 32 samples (two vectors) -> 32 bytes in order (packus works per lane). */
    #define RELAY_ENC_AVX2(NAME, CORE)                                                \
    RELAY_AVX2 static void NAME(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,       \
                                uint8_t *d) {                                             \
        Py_ssize_t i = 0;                                                                 \
        for (; i + 32 <= n; i += 32) {                                                    \
            __m256i c0 = CORE(_mm256_loadu_si256((const __m256i *)(s + 2 * i)));          \
            __m256i c1 = CORE(_mm256_loadu_si256((const __m256i *)(s + 2 * i + 32)));     \
            __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(c0, c1), 0xD8);      \
            _mm256_storeu_si256((__m256i *)(d + i), b);                                   \
        }                                                                                 \
        if (i + 16 <= n) {                                                                \
            __m256i c0 = CORE(_mm256_loadu_si256((const __m256i *)(s + 2 * i)));          \
            __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(c0, c0), 0x08);      \
            _mm_storeu_si128((__m128i *)(d + i), _mm256_castsi256_si128(b));              \
            i += 16;                                                                      \
        }                                                                                 \
        relay_enc_tab(tab, s + 2 * i, n - i, d + i);                                      \
    }
    RELAY_ENC_AVX2(relay_ulaw_enc_avx2, relay_ulaw16_avx2)
    RELAY_ENC_AVX2(relay_alaw_enc_avx2, relay_alaw16_avx2)

    /* u-law decode of 16 codes: inv = ~code; e, m = inv's exponent and mantissa;
       |x| = (((2m + 33) << e) - 33) << 2, the shift done as a multiply by 2^e (vpshufb). */
    RELAY_AVX2 static inline __m256i relay_ulaw_dec16_avx2(__m128i raw) {
        const __m256i pow2 = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, (char)128,
                                              0, 0, 0, 0, 0, 0, 0, 0,
                                              1, 2, 4, 8, 16, 32, 64, (char)128,
                                              0, 0, 0, 0, 0, 0, 0, 0);
        __m256i c = _mm256_cvtepu8_epi16(raw);
        __m256i inv = _mm256_xor_si256(c, _mm256_set1_epi16(0xFF));
        __m256i e = _mm256_and_si256(_mm256_srli_epi16(inv, 4), _mm256_set1_epi16(7));
        __m256i m = _mm256_and_si256(inv, _mm256_set1_epi16(15));
        /* the high byte of each index is 0x80, so vpshufb zeroes the high byte */
        __m256i scale = _mm256_shuffle_epi8(pow2, _mm256_or_si256(e, _mm256_set1_epi16(-32768)));
        __m256i mag = _mm256_mullo_epi16(_mm256_add_epi16(_mm256_add_epi16(m, m),
                                                          _mm256_set1_epi16(33)), scale);
        mag = _mm256_slli_epi16(_mm256_sub_epi16(mag, _mm256_set1_epi16(33)), 2);
        __m256i neg = _mm256_cmpeq_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x80)),
                                         _mm256_setzero_si256());
        return _mm256_sub_epi16(_mm256_xor_si256(mag, neg), neg);
    }
    /* A-law decode of 16 codes: ix = (code ^ 0x55) & 0x7F; e, m; segment 0 is linear,
       |x| = ((m + 16 * (e > 0)) * 16 + 8) << max(e - 1, 0) (a multiply; vpshufb tables). */
    RELAY_AVX2 static inline __m256i relay_alaw_dec16_avx2(__m128i raw) {
        const __m256i mul = _mm256_setr_epi8(1, 1, 2, 4, 8, 16, 32, 64, 0, 0, 0, 0, 0, 0, 0, 0,
                                             1, 1, 2, 4, 8, 16, 32, 64, 0, 0, 0, 0, 0, 0, 0, 0);
        const __m256i add = _mm256_setr_epi8(0, 16, 16, 16, 16, 16, 16, 16,
                                             0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 16, 16, 16, 16, 16, 16, 16,
                                             0, 0, 0, 0, 0, 0, 0, 0);
        __m256i c = _mm256_cvtepu8_epi16(raw);
        __m256i ix = _mm256_and_si256(_mm256_xor_si256(c, _mm256_set1_epi16(0x55)),
                                      _mm256_set1_epi16(0x7F));
        __m256i idx = _mm256_or_si256(_mm256_srli_epi16(ix, 4), _mm256_set1_epi16(-32768));
        __m256i m = _mm256_add_epi16(_mm256_and_si256(ix, _mm256_set1_epi16(15)),
                                     _mm256_shuffle_epi8(add, idx));
        __m256i mag = _mm256_add_epi16(_mm256_slli_epi16(m, 4), _mm256_set1_epi16(8));
        mag = _mm256_mullo_epi16(mag, _mm256_shuffle_epi8(mul, idx));
        __m256i neg = _mm256_cmpeq_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x80)),
                                         _mm256_setzero_si256());
        return _mm256_sub_epi16(_mm256_xor_si256(mag, neg), neg);
    }
    #define RELAY_DEC_AVX2(NAME, CORE)                                                      \
    RELAY_AVX2 static void NAME(const int16_t *tab, const uint8_t *s, Py_ssize_t n,        \
                                uint8_t *d) {                                              \
        Py_ssize_t i = 0;                                                                  \
        for (; i + 16 <= n; i += 16)                                                       \
            _mm256_storeu_si256((__m256i *)(d + 2 * i),                                    \
                                CORE(_mm_loadu_si128((const __m128i *)(s + i))));          \
        relay_dec_tab(tab, s + i, n - i, d + 2 * i);                                       \
    }
    RELAY_DEC_AVX2(relay_ulaw_dec_avx2, relay_ulaw_dec16_avx2)
    RELAY_DEC_AVX2(relay_alaw_dec_avx2, relay_alaw_dec16_avx2)

    RELAY_AVX2 static inline int32_t relay_dot_avx2(const int16_t *c, const int16_t *x,
                                                    Py_ssize_t n) {
        __m256i acc = _mm256_setzero_si256();
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16)
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(c + i)),
                _mm256_loadu_si256((const __m256i *)(x + i))));
        __m128i a = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        if (i + 8 <= n) {
            a = _mm_add_epi32(a, _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(c + i)),
                                                _mm_loadu_si128((const __m128i *)(x + i))));
            i += 8;
        }
        a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0x4E));
        a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0xB1));
        int32_t s = _mm_cvtsi128_si32(a);
        for (; i < n; i++) s += (int32_t)c[i] * (int32_t)x[i];
        return s;
    }
    RELAY_AVX2 static uint8_t *relay_fir_avx2(const int16_t *buf, const int16_t *coef,
                                              Py_ssize_t taps, int up, int down, int copy_phase,
                                              Py_ssize_t copy_tap, Py_ssize_t chunk,
                                              Py_ssize_t *q_io, int *p_io, uint8_t *dst) {
        RELAY_FIR_LOOP(relay_dot_avx2)
    }

    /* Interpolation (down == 1, up 2 or 3), vectorised across outputs instead of taps: 16
       consecutive outputs of one phase at a time, taps taken in pairs with vpmaddwd, so there
       is no horizontal sum per output; then the phases are interleaved with shuffles. */
    RELAY_AVX2 static inline __m256i relay_interp16_avx2(const int16_t *x, const int16_t *c,
                                                         Py_ssize_t taps) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (Py_ssize_t t = 0; t + 2 <= taps; t += 2) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(x + t));
            __m256i b = _mm256_loadu_si256((const __m256i *)(x + t + 1));
            int32_t pair;
            memcpy(&pair, c + t, 4);
            __m256i k = _mm256_set1_epi32(pair);
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), k));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), k));
        }
        const __m256i half = _mm256_set1_epi32(1 << 13);
        lo = _mm256_srai_epi32(_mm256_add_epi32(lo, half), 14);
        hi = _mm256_srai_epi32(_mm256_add_epi32(hi, half), 14);
        return _mm256_packs_epi32(lo, hi);   /* saturates; unpack then pack keeps the order */
    }
    /* The same for SSE2: 8 outputs of one phase at a time. */
    static inline __m128i relay_interp8_sse2(const int16_t *x, const int16_t *c, Py_ssize_t taps) {
        __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
        for (Py_ssize_t t = 0; t + 2 <= taps; t += 2) {
            __m128i a = _mm_loadu_si128((const __m128i *)(x + t));
            __m128i b = _mm_loadu_si128((const __m128i *)(x + t + 1));
            int32_t pair;
            memcpy(&pair, c + t, 4);
            __m128i k = _mm_set1_epi32(pair);
            lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_unpacklo_epi16(a, b), k));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_unpackhi_epi16(a, b), k));
        }
        const __m128i half = _mm_set1_epi32(1 << 13);
        lo = _mm_srai_epi32(_mm_add_epi32(lo, half), 14);
        hi = _mm_srai_epi32(_mm_add_epi32(hi, half), 14);
        return _mm_packs_epi32(lo, hi);
    }
    static uint8_t *relay_interp_sse2(const int16_t *buf, const int16_t *coef, Py_ssize_t taps,
                                      int up, int copy_phase, Py_ssize_t copy_tap,
                                      Py_ssize_t chunk, uint8_t *dst) {
        Py_ssize_t q = 0;
        int p = 0;
        if (up == 2 || up == 3) {
            for (; q + 8 <= chunk; q += 8) {
                __m128i y[3];
                for (int ph = 0; ph < up; ph++)
                    y[ph] = (ph == copy_phase)
                        ? _mm_loadu_si128((const __m128i *)(buf + q + copy_tap))
                        : relay_interp8_sse2(buf + q, coef + ph * taps, taps);
                if (up == 2) {
                    _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi16(y[0], y[1]));
                    _mm_storeu_si128((__m128i *)(dst + 16), _mm_unpackhi_epi16(y[0], y[1]));
                    dst += 32;
                } else {
                    int16_t v[3][8];
                    for (int ph = 0; ph < 3; ph++) _mm_storeu_si128((__m128i *)v[ph], y[ph]);
                    for (int j = 0; j < 8; j++)
                        for (int ph = 0; ph < 3; ph++, dst += 2) relay_st16(dst, v[ph][j]);
                }
            }
        }
        return relay_fir(buf, coef, taps, up, 1, copy_phase, copy_tap, chunk, &q, &p, dst);
    }
    /* vpshufb masks interleaving three vectors of 8 samples a, b, c into a0 b0 c0 a1 ... */
    static uint8_t relay_mask3[3][3][16];
    static void relay_init_masks(void) {
        for (int o = 0; o < 3; o++)
            for (int src = 0; src < 3; src++)
                for (int e = 0; e < 8; e++) {
                    int g = 8 * o + e;
                    int hit = (g % 3) == src;
                    relay_mask3[o][src][2 * e] = hit ? (uint8_t)(2 * (g / 3)) : 0x80;
                    relay_mask3[o][src][2 * e + 1] = hit ? (uint8_t)(2 * (g / 3) + 1) : 0x80;
                }
    }
    RELAY_AVX2 static uint8_t *relay_interp_avx2(const int16_t *buf, const int16_t *coef,
                                                 Py_ssize_t taps, int up, int copy_phase,
                                                 Py_ssize_t copy_tap, Py_ssize_t chunk,
                                                 uint8_t *dst) {
        Py_ssize_t q = 0;
        int p = 0;
        if (up == 2 || up == 3) {
            for (; q + 16 <= chunk; q += 16) {
                __m256i y[3];
                for (int ph = 0; ph < up; ph++)
                    y[ph] = (ph == copy_phase)
                        ? _mm256_loadu_si256((const __m256i *)(buf + q + copy_tap))
                        : relay_interp16_avx2(buf + q, coef + ph * taps, taps);
                if (up == 2) {
                    __m256i lo = _mm256_unpacklo_epi16(y[0], y[1]);
                    __m256i hi = _mm256_unpackhi_epi16(y[0], y[1]);
                    _mm256_storeu_si256((__m256i *)dst, _mm256_permute2x128_si256(lo, hi, 0x20));
                    _mm256_storeu_si256((__m256i *)(dst + 32),
                                        _mm256_permute2x128_si256(lo, hi, 0x31));
                    dst += 64;
                } else {
                    for (int h = 0; h < 2; h++) {
                        __m128i v[3];
                        for (int ph = 0; ph < 3; ph++)
                            v[ph] = h ? _mm256_extracti128_si256(y[ph], 1)
                                      : _mm256_castsi256_si128(y[ph]);
                        for (int o = 0; o < 3; o++) {
                            __m128i r = _mm_or_si128(
                                _mm_or_si128(
                                    _mm_shuffle_epi8(v[0], _mm_loadu_si128(
                                        (const __m128i *)relay_mask3[o][0])),
                                    _mm_shuffle_epi8(v[1], _mm_loadu_si128(
                                        (const __m128i *)relay_mask3[o][1]))),
                                _mm_shuffle_epi8(v[2], _mm_loadu_si128(
                                    (const __m128i *)relay_mask3[o][2])));
                            _mm_storeu_si128((__m128i *)dst, r);
                            dst += 16;
                        }
                    }
                }
            }
        }
        return relay_fir_avx2(buf, coef, taps, up, 1, copy_phase, copy_tap, chunk, &q, &p, dst);
    }

    #else
    /* Elsewhere the portable kernels serve every level (the compiler vectorises them). */
    static int relay_cpu_level(void) { return 0; }
    static void relay_ulaw_enc_sse2(const uint8_t *t, const uint8_t *s, Py_ssize_t n, uint8_t *d)
        { relay_enc_tab(t, s, n, d); }
    static void relay_alaw_enc_sse2(const uint8_t *t, const uint8_t *s, Py_ssize_t n, uint8_t *d)
        { relay_enc_tab(t, s, n, d); }
    #define relay_ulaw_enc_avx2 relay_ulaw_enc_sse2
    #define relay_alaw_enc_avx2 relay_alaw_enc_sse2
    #define relay_ulaw_dec_sse2 relay_dec_tab
    #define relay_alaw_dec_sse2 relay_dec_tab
    #define relay_ulaw_dec_avx2 relay_dec_tab
    #define relay_alaw_dec_avx2 relay_dec_tab
    #define relay_fir_avx2 relay_fir
    #define relay_interp_avx2 relay_interp_sse2
    static uint8_t *relay_interp_sse2(const int16_t *buf, const int16_t *coef, Py_ssize_t taps,
                                      int up, int copy_phase, Py_ssize_t copy_tap,
                                      Py_ssize_t chunk, uint8_t *dst) {
        Py_ssize_t q = 0;
        int p = 0;
        return relay_fir(buf, coef, taps, up, 1, copy_phase, copy_tap, chunk, &q, &p, dst);
    }
    #endif
    """
    int16_t relay_ld16(const uint8_t *p) noexcept nogil
    uint16_t relay_ldu16(const uint8_t *p) noexcept nogil
    void relay_st16(uint8_t *p, int16_t v) noexcept nogil
    int relay_cpu_level() noexcept nogil
    void relay_dec_tab(const int16_t *tab, const uint8_t *s, Py_ssize_t n,
                       uint8_t *d) noexcept nogil
    void relay_enc_tab(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                       uint8_t *d) noexcept nogil
    void relay_ulaw_enc_sse2(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_alaw_enc_sse2(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_ulaw_enc_avx2(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_alaw_enc_avx2(const uint8_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_ulaw_dec_sse2(const int16_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_alaw_dec_sse2(const int16_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_ulaw_dec_avx2(const int16_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    void relay_alaw_dec_avx2(const int16_t *tab, const uint8_t *s, Py_ssize_t n,
                             uint8_t *d) noexcept nogil
    uint8_t *relay_fir(const int16_t *buf, const int16_t *coef, Py_ssize_t taps, int up,
                       int down, int copy_phase, Py_ssize_t copy_tap, Py_ssize_t chunk,
                       Py_ssize_t *q_io, int *p_io, uint8_t *dst) noexcept nogil
    uint8_t *relay_interp_avx2(const int16_t *buf, const int16_t *coef, Py_ssize_t taps, int up,
                               int copy_phase, Py_ssize_t copy_tap, Py_ssize_t chunk,
                               uint8_t *dst) noexcept nogil
    uint8_t *relay_interp_sse2(const int16_t *buf, const int16_t *coef, Py_ssize_t taps, int up,
                               int copy_phase, Py_ssize_t copy_tap, Py_ssize_t chunk,
                               uint8_t *dst) noexcept nogil
    uint8_t *relay_fir_avx2(const int16_t *buf, const int16_t *coef, Py_ssize_t taps, int up,
                            int down, int copy_phase, Py_ssize_t copy_tap, Py_ssize_t chunk,
                            Py_ssize_t *q_io, int *p_io, uint8_t *dst) noexcept nogil


# ---------------------------------------------------------------------------------------------
# G.711 sample rules (used once, to fill the tables)

cdef uint8_t _ulaw_encode_sample(int x) noexcept nogil:
    """One PCM16 sample -> u-law, by the segment rule of G.711 (14-bit magnitude, bias 33)."""
    cdef int sign = 0x80 if x >= 0 else 0x00
    cdef int mag = ((~x) if x < 0 else x) >> 2   # one's complement for negatives
    mag += 33
    if mag > 0x1FFF:
        mag = 0x1FFF
    cdef int seg = 1
    cdef int rest = mag >> 6
    while rest:
        seg += 1
        rest >>= 1
    # segment 1..8 -> inverted exponent; mantissa = 4 bits below the leading one, inverted
    return <uint8_t>(sign | ((8 - seg) << 4) | (15 - ((mag >> seg) & 0x0F)))


cdef int _ulaw_decode_sample(uint8_t code) noexcept nogil:
    """u-law -> PCM16 (the 14-bit reconstruction value, scaled by 4)."""
    cdef int inv = (~code) & 0xFF
    cdef int exponent = (inv >> 4) & 0x07
    cdef int mantissa = inv & 0x0F
    cdef int mag = (((mantissa << 1) + 33) << exponent) - 33
    return (mag << 2) if (code & 0x80) else -(mag << 2)


cdef uint8_t _alaw_encode_sample(int x) noexcept nogil:
    """One PCM16 sample -> A-law, by the segment rule of G.711 (12-bit magnitude)."""
    cdef int sign = 0x80 if x >= 0 else 0x00
    cdef int ix = ((~x) if x < 0 else x) >> 4    # one's complement for negatives
    cdef int exponent = 0
    if ix > 15:
        exponent = 1
        while ix > 31:
            ix >>= 1
            exponent += 1
        ix -= 16
    return <uint8_t>((sign | (exponent << 4) | ix) ^ 0x55)


cdef int _alaw_decode_sample(uint8_t code) noexcept nogil:
    """A-law -> PCM16 (the 13-bit reconstruction value, scaled by 8)."""
    cdef int ix = (code ^ 0x55) & 0x7F
    cdef int exponent = ix >> 4
    cdef int mag = ix & 0x0F
    if exponent > 0:
        mag += 16
    mag = (mag << 4) + 8
    if exponent > 1:
        mag <<= exponent - 1
    return mag if (code & 0x80) else -mag


# ---------------------------------------------------------------------------------------------
# Tables

cdef int16_t _ULAW_DEC[256]
cdef int16_t _ALAW_DEC[256]
cdef uint32_t _ULAW_SQ[256]       # decoded value squared, for energy without decoding
cdef uint32_t _ALAW_SQ[256]
cdef uint8_t _ULAW_ENC[65536]     # index: the sample as an unsigned 16-bit number
cdef uint8_t _ALAW_ENC[65536]
cdef uint8_t _ULAW_TO_ALAW[256]
cdef uint8_t _ALAW_TO_ULAW[256]


cdef void _init_tables() noexcept:
    cdef int i, v
    for i in range(256):
        v = _ulaw_decode_sample(<uint8_t>i)
        _ULAW_DEC[i] = <int16_t>v
        _ULAW_SQ[i] = <uint32_t>(v * v)
        v = _alaw_decode_sample(<uint8_t>i)
        _ALAW_DEC[i] = <int16_t>v
        _ALAW_SQ[i] = <uint32_t>(v * v)
    for i in range(65536):
        _ULAW_ENC[i] = _ulaw_encode_sample(<int16_t>(<uint16_t>i))
        _ALAW_ENC[i] = _alaw_encode_sample(<int16_t>(<uint16_t>i))
    for i in range(256):
        _ULAW_TO_ALAW[i] = _ALAW_ENC[<uint16_t>_ULAW_DEC[i]]
        _ALAW_TO_ULAW[i] = _ULAW_ENC[<uint16_t>_ALAW_DEC[i]]


_init_tables()


# ---------------------------------------------------------------------------------------------
# Kernel dispatch (pointers in, pointers out; n = number of samples)

_LEVEL_NAMES = ("portable", "sse2", "avx2")
cdef int _CPU_LEVEL = relay_cpu_level()
cdef int _level = _CPU_LEVEL


def simd_level() -> str:
    """Which kernels are in use: "avx2", "sse2" (x86-64 without AVX2) or "portable"."""
    return _LEVEL_NAMES[_level]


def _set_simd_level(name: str) -> str:
    """Use the kernels of a lower level (tests compare them all); returns the previous level."""
    global _level
    cdef int wanted = _LEVEL_NAMES.index(name)
    if wanted > _CPU_LEVEL:
        raise ValueError(f"this CPU cannot run the {name} kernels")
    previous = _LEVEL_NAMES[_level]
    _level = wanted
    return previous


cdef void _ulaw_dec(const uint8_t *s, Py_ssize_t n, uint8_t *d) noexcept nogil:
    if _level >= 2:
        relay_ulaw_dec_avx2(_ULAW_DEC, s, n, d)
    elif _level == 1:
        relay_ulaw_dec_sse2(_ULAW_DEC, s, n, d)
    else:
        relay_dec_tab(_ULAW_DEC, s, n, d)


cdef void _alaw_dec(const uint8_t *s, Py_ssize_t n, uint8_t *d) noexcept nogil:
    if _level >= 2:
        relay_alaw_dec_avx2(_ALAW_DEC, s, n, d)
    elif _level == 1:
        relay_alaw_dec_sse2(_ALAW_DEC, s, n, d)
    else:
        relay_dec_tab(_ALAW_DEC, s, n, d)


cdef void _ulaw_enc(const uint8_t *s, Py_ssize_t n, uint8_t *d) noexcept nogil:
    if _level >= 2:
        relay_ulaw_enc_avx2(_ULAW_ENC, s, n, d)
    elif _level == 1:
        relay_ulaw_enc_sse2(_ULAW_ENC, s, n, d)
    else:
        relay_enc_tab(_ULAW_ENC, s, n, d)


cdef void _alaw_enc(const uint8_t *s, Py_ssize_t n, uint8_t *d) noexcept nogil:
    if _level >= 2:
        relay_alaw_enc_avx2(_ALAW_ENC, s, n, d)
    elif _level == 1:
        relay_alaw_enc_sse2(_ALAW_ENC, s, n, d)
    else:
        relay_enc_tab(_ALAW_ENC, s, n, d)


cdef inline void _translate(const uint8_t *table, const uint8_t *src, Py_ssize_t n,
                            uint8_t *dst) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = table[src[i]]


# ---------------------------------------------------------------------------------------------
# Buffer helpers

cdef inline int _check_even(Py_ssize_t nbytes) except -1:
    if nbytes & 1:
        raise ValueError(
            f"PCM16 input must have an even number of bytes (2 per sample), got {nbytes}"
        )
    return 0


cdef inline int _check_out(Py_ssize_t need, Py_ssize_t have) except -1:
    if have < need:
        raise ValueError(f"out buffer too small: need {need} bytes, got {have}")
    return 0


cdef struct _View:
    uint8_t *ptr
    Py_ssize_t len
    bint held                      # buf holds a buffer export to release
    Py_buffer buf


cdef inline int _open_in(object obj, _View *v) except -1:
    """A contiguous read view of obj (TypeError or BufferError for anything else)."""
    if type(obj) is bytes:         # the common case: immutable, nothing to hold
        v.ptr = <uint8_t *>PyBytes_AS_STRING(obj)
        v.len = PyBytes_GET_SIZE(obj)
        v.held = False
    else:
        PyObject_GetBuffer(obj, &v.buf, PyBUF_SIMPLE)
        v.ptr = <uint8_t *>v.buf.buf
        v.len = v.buf.len
        v.held = True
    return 0


cdef inline int _open_out(object obj, _View *v) except -1:
    """A contiguous writable view of obj (TypeError or BufferError for anything else)."""
    if type(obj) is bytearray:     # cannot be resized: no Python code runs while we write
        v.ptr = <uint8_t *>PyByteArray_AS_STRING(obj)
        v.len = PyByteArray_GET_SIZE(obj)
        v.held = False
    else:
        PyObject_GetBuffer(obj, &v.buf, PyBUF_WRITABLE)
        v.ptr = <uint8_t *>v.buf.buf
        v.len = v.buf.len
        v.held = True
    return 0


cdef inline void _close(_View *v) noexcept:
    if v.held:
        v.held = False
        PyBuffer_Release(&v.buf)


# ---------------------------------------------------------------------------------------------
# Codecs

ctypedef void (*_Kernel)(const uint8_t *src, Py_ssize_t n, uint8_t *dst) noexcept nogil

cdef enum _Kind:
    _DECODE = 0                    # 1 byte in -> 2 bytes out
    _ENCODE = 1                    # 2 bytes in -> 1 byte out
    _TRANSLATE = 2                 # 1 byte in -> 1 byte out


cdef inline Py_ssize_t _out_len(Py_ssize_t n, _Kind kind) except -1:
    if kind == _DECODE:
        if n > (PY_SSIZE_T_MAX >> 1):
            raise MemoryError("input too large")
        return 2 * n
    if kind == _ENCODE:
        _check_even(n)
        return n >> 1
    return n


cdef object _convert(object data, _Kernel kernel, _Kind kind):
    cdef _View src
    cdef Py_ssize_t n
    _open_in(data, &src)
    try:
        n = _out_len(src.len, kind)
        out = PyBytes_FromStringAndSize(NULL, n)
        kernel(src.ptr, n if kind == _ENCODE else src.len, <uint8_t *>PyBytes_AS_STRING(out))
    finally:
        _close(&src)
    return out


cdef Py_ssize_t _convert_into(object data, object out, _Kernel kernel, _Kind kind) except -1:
    cdef _View src
    cdef _View dst
    cdef Py_ssize_t n
    _open_in(data, &src)
    try:
        n = _out_len(src.len, kind)
        _open_out(out, &dst)
        try:
            _check_out(n, dst.len)
            kernel(src.ptr, n if kind == _ENCODE else src.len, dst.ptr)
        finally:
            _close(&dst)
    finally:
        _close(&src)
    return n


cdef void _ulaw_to_alaw(const uint8_t *s, Py_ssize_t n, uint8_t *d) noexcept nogil:
    _translate(_ULAW_TO_ALAW, s, n, d)


cdef void _alaw_to_ulaw(const uint8_t *s, Py_ssize_t n, uint8_t *d) noexcept nogil:
    _translate(_ALAW_TO_ULAW, s, n, d)


def ulaw_decode(data) -> bytes:
    """u-law bytes -> PCM16 (twice as many bytes), bit-exact ITU-T G.711."""
    return _convert(data, _ulaw_dec, _DECODE)


def ulaw_encode(pcm) -> bytes:
    """PCM16 -> u-law (half as many bytes). ValueError on an odd length."""
    return _convert(pcm, _ulaw_enc, _ENCODE)


def alaw_decode(data) -> bytes:
    """A-law bytes -> PCM16, bit-exact ITU-T G.711."""
    return _convert(data, _alaw_dec, _DECODE)


def alaw_encode(pcm) -> bytes:
    """PCM16 -> A-law. ValueError on an odd length."""
    return _convert(pcm, _alaw_enc, _ENCODE)


def ulaw_decode_into(data, out) -> int:
    """u-law -> PCM16 written at the start of out; returns the bytes written (2 per code)."""
    return _convert_into(data, out, _ulaw_dec, _DECODE)


def ulaw_encode_into(pcm, out) -> int:
    """PCM16 -> u-law written at the start of out; returns the bytes written (1 per sample)."""
    return _convert_into(pcm, out, _ulaw_enc, _ENCODE)


def alaw_decode_into(data, out) -> int:
    """A-law -> PCM16 written at the start of out; returns the bytes written (2 per code)."""
    return _convert_into(data, out, _alaw_dec, _DECODE)


def alaw_encode_into(pcm, out) -> int:
    """PCM16 -> A-law written at the start of out; returns the bytes written (1 per sample)."""
    return _convert_into(pcm, out, _alaw_enc, _ENCODE)


def ulaw_to_alaw(data) -> bytes:
    """Transcode u-law to A-law (via the exact PCM value)."""
    return _convert(data, _ulaw_to_alaw, _TRANSLATE)


def alaw_to_ulaw(data) -> bytes:
    """Transcode A-law to u-law (via the exact PCM value)."""
    return _convert(data, _alaw_to_ulaw, _TRANSLATE)


# ---------------------------------------------------------------------------------------------
# Energy

cdef double _FULL_SCALE = 32768.0
cdef double _DBOV_FLOOR = -127.0


cdef inline double _rms(uint64_t sum_sq, Py_ssize_t n) noexcept nogil:
    if n <= 0:
        return 0.0
    return sqrt(<double>sum_sq / <double>n)


cdef inline double _dbov(double rms) noexcept nogil:
    if rms <= 0.0:
        return _DBOV_FLOOR
    cdef double db = 20.0 * log10(rms / _FULL_SCALE)
    return db if db > _DBOV_FLOOR else _DBOV_FLOOR


cdef double _pcm_rms_of(object pcm) except -1.0:
    cdef _View src
    cdef uint64_t acc = 0
    cdef Py_ssize_t i, n
    cdef int32_t x
    _open_in(pcm, &src)
    try:
        _check_even(src.len)
        n = src.len >> 1
        for i in range(n):
            x = relay_ld16(src.ptr + 2 * i)
            acc += <uint64_t>(<uint32_t>(x * x))
    finally:
        _close(&src)
    return _rms(acc, n)


cdef double _law_rms_of(object data, const uint32_t *squares) except -1.0:
    cdef _View src
    cdef uint64_t acc = 0
    cdef Py_ssize_t i
    _open_in(data, &src)
    try:
        for i in range(src.len):
            acc += squares[src.ptr[i]]
    finally:
        _close(&src)
    return _rms(acc, src.len)


def pcm_rms(pcm) -> float:
    """RMS of PCM16 samples (0.0 for empty input)."""
    return _pcm_rms_of(pcm)


def pcm_dbov(pcm) -> float:
    """Level in dBov (0 dBov = full-scale square wave); -127.0 for silence or empty input."""
    return _dbov(_pcm_rms_of(pcm))


def ulaw_rms(data) -> float:
    """RMS of the PCM16 values the u-law bytes decode to, without allocating."""
    return _law_rms_of(data, _ULAW_SQ)


def ulaw_dbov(data) -> float:
    """Level in dBov of u-law audio; -127.0 for digital silence or empty input."""
    return _dbov(_law_rms_of(data, _ULAW_SQ))


def alaw_rms(data) -> float:
    """RMS of the PCM16 values the A-law bytes decode to, without allocating."""
    return _law_rms_of(data, _ALAW_SQ)


def alaw_dbov(data) -> float:
    """Level in dBov of A-law audio; -127.0 for empty input (A-law has no zero code)."""
    return _dbov(_law_rms_of(data, _ALAW_SQ))


# ---------------------------------------------------------------------------------------------
# Resampler

SUPPORTED_RATES = (8000, 16000, 24000)

# Filter design: pass band up to _PASSBAND_HZ[lower rate], stop band from (lower rate - pass
# band), so nothing that folds back lands in the pass band; _STOPBAND_DB rejection (Kaiser).
_PASSBAND_HZ = {8000: 3400.0, 16000: 7000.0}
_STOPBAND_DB = 55.0

cdef enum:
    _Q = 14                      # coefficients are Q14 int16
    _CHUNK = 1024                # input samples filtered per pass (bounds the work buffer)

_FILTERS = {}                    # (in_rate, out_rate) -> design tuple, built once per pair


def _bessel_i0(x: float) -> float:
    """Modified Bessel function of the first kind, order 0 (power series)."""
    total = term = 1.0
    k = 0
    half = x / 2.0
    while term > 1e-17 * total:
        k += 1
        term *= (half / k) ** 2
        total += term
    return total


def design_filter(in_rate: int, out_rate: int) -> tuple:
    """The polyphase filter for a rate pair: (up, down, taps_per_phase, coefficients, copy).

    coefficients holds `up` phases of `taps_per_phase` Q14 ints each, oldest sample first (so
    the output is a forward dot product with the input window); copy is (phase, tap) of a
    branch that is a pure delay, or (-1, 0).
    """
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    if up == down:
        return 1, 1, 1, [1 << _Q], (0, 0)
    low = min(in_rate, out_rate)
    f_pass = _PASSBAND_HZ[low]
    f_stop = low - f_pass
    f_high = in_rate * up                         # the rate the prototype filter runs at
    width = 2.0 * math.pi * (f_stop - f_pass) / f_high
    n_min = math.ceil((_STOPBAND_DB - 7.95) / (2.285 * width)) + 1
    taps = -(-n_min // up)                        # per phase ...
    taps = -(-taps // 8) * 8                      # ... a whole number of SIMD blocks
    n = taps * up - (0 if (taps * up) % 2 else 1)  # odd length: a whole-sample centre
    beta = 0.1102 * (_STOPBAND_DB - 8.7)
    centre = (n - 1) / 2.0
    fc = (low / 2.0) / f_high                     # cut-off at the lower Nyquist, cycles/sample
    i0_beta = _bessel_i0(beta)
    proto = []
    for i in range(taps * up):
        if i >= n:
            proto.append(0.0)
            continue
        d = i - centre
        s = 2.0 * fc if d == 0 else math.sin(2.0 * math.pi * fc * d) / (math.pi * d)
        r = 2.0 * i / (n - 1) - 1.0
        proto.append(s * _bessel_i0(beta * math.sqrt(max(0.0, 1.0 - r * r))) / i0_beta)
    coefficients = []
    copy = (-1, 0)
    for p in range(up):
        branch = [proto[p + up * k] for k in range(taps)]   # newest input sample first
        total = sum(branch)
        q = [round(c / total * (1 << _Q)) for c in branch]  # DC gain of every branch = 1.0
        biggest = max(range(taps), key=lambda k: abs(q[k]))
        q[biggest] += (1 << _Q) - sum(q)
        q.reverse()                                         # oldest first
        if sum(abs(c) for c in q) >= (1 << 16):
            raise RuntimeError("filter gain would overflow the int32 accumulator")
        if q.count(0) == taps - 1 and (1 << _Q) in q:
            copy = (p, q.index(1 << _Q))
        coefficients.extend(q)
    return up, down, taps, coefficients, copy


def _check_rate(rate) -> int:
    """rate as an int, or ValueError unless it is an integer in SUPPORTED_RATES."""
    if not isinstance(rate, bool) and hasattr(type(rate), "__index__"):
        value = operator.index(rate)
        if value in SUPPORTED_RATES:
            return value
    raise ValueError(f"unsupported sample rate {rate!r}: use one of {SUPPORTED_RATES}")


cdef class Resampler:
    """Streaming polyphase FIR resampler between 8000, 16000 and 24000 Hz.

    Keeps its filter history between calls, so consecutive frames join without clicks.
    Downsampling filters below the new Nyquist (>= 40 dB stop-band rejection); upsampling
    removes the images. Any input length is accepted (even a single sample). Equal rates are
    accepted too and copy the audio unchanged.
    """

    cdef readonly int in_rate
    cdef readonly int out_rate
    cdef int _up                   # L: interpolation factor
    cdef int _down                 # M: decimation factor
    cdef Py_ssize_t _taps          # K: taps per phase
    cdef int _copy_phase           # the phase that is a pure delay, or -1
    cdef Py_ssize_t _copy_tap
    cdef int _phase                # next output: phase in [0, L) ...
    cdef Py_ssize_t _pos           # ... and newest input index relative to the next input
    cdef int16_t *_coef            # L * K, phase-major, oldest tap first
    cdef int16_t *_buf             # K - 1 samples of history, then up to _CHUNK new ones

    def __cinit__(self, in_rate, out_rate):
        in_rate, out_rate = _check_rate(in_rate), _check_rate(out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        key = (in_rate, out_rate)
        design = _FILTERS.get(key)
        if design is None:
            design = _FILTERS[key] = design_filter(in_rate, out_rate)
        up, down, taps, coefficients, copy = design
        self._up = up
        self._down = down
        self._taps = taps
        self._copy_phase, self._copy_tap = copy
        self._coef = <int16_t *>malloc(up * taps * sizeof(int16_t))
        self._buf = <int16_t *>malloc((taps - 1 + _CHUNK) * sizeof(int16_t))
        if self._coef == NULL or self._buf == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(up * taps):
            self._coef[i] = <int16_t>coefficients[i]
        self.reset()

    def __dealloc__(self):
        free(self._coef)
        free(self._buf)

    def reset(self) -> None:
        """Forget the filter history (start of a new stream)."""
        memset(self._buf, 0, (self._taps - 1 + _CHUNK) * sizeof(int16_t))
        self._phase = 0
        self._pos = 0

    @property
    def delay(self) -> float:
        """Group delay of the filter, in output samples."""
        n = self._up * self._taps
        if n % 2 == 0:
            n -= 1
        return (n - 1) / 2.0 / self._down if self._up != self._down else 0.0

    cdef inline Py_ssize_t _count(self, Py_ssize_t n_in) noexcept:
        """Exactly how many samples the next process() of n_in samples produces."""
        # outputs are at t = t0 + k*M (t in input samples * L) while t < L * n_in
        cdef Py_ssize_t t0 = self._pos * self._up + self._phase
        cdef Py_ssize_t span = n_in * self._up - t0
        if span <= 0:
            return 0
        return (span + self._down - 1) // self._down

    def max_output_bytes(self, Py_ssize_t input_bytes) -> int:
        """An upper bound on what process() returns for input_bytes of input."""
        if input_bytes <= 0:
            return 0
        if input_bytes > (PY_SSIZE_T_MAX >> 3):
            raise OverflowError("input_bytes too large")
        return 2 * (((input_bytes >> 1) * self._up + self._down - 1) // self._down)

    cdef void _run(self, const uint8_t *src, Py_ssize_t n_in, uint8_t *dst) noexcept:
        cdef Py_ssize_t hist = self._taps - 1
        cdef Py_ssize_t taps = self._taps
        cdef int up = self._up
        cdef int down = self._down
        cdef int copy_phase = self._copy_phase
        cdef Py_ssize_t copy_tap = self._copy_tap
        cdef int16_t *buf = self._buf
        cdef const int16_t *coef = self._coef
        cdef Py_ssize_t chunk, j, q
        cdef int p
        while n_in > 0:
            chunk = n_in if n_in < _CHUNK else _CHUNK
            for j in range(chunk):
                buf[hist + j] = relay_ld16(src + 2 * j)
            q = self._pos
            p = self._phase
            if down == 1 and _level >= 1:
                # pure interpolation: (q, p) is (0, 0) at every chunk start and end
                if _level >= 2:
                    dst = relay_interp_avx2(buf, coef, taps, up, copy_phase, copy_tap, chunk, dst)
                else:
                    dst = relay_interp_sse2(buf, coef, taps, up, copy_phase, copy_tap, chunk, dst)
                q = chunk
            elif _level >= 2:
                dst = relay_fir_avx2(buf, coef, taps, up, down, copy_phase, copy_tap, chunk,
                                     &q, &p, dst)
            else:
                dst = relay_fir(buf, coef, taps, up, down, copy_phase, copy_tap, chunk,
                                &q, &p, dst)
            self._pos = q - chunk
            self._phase = p
            memmove(buf, buf + chunk, hist * sizeof(int16_t))
            src += 2 * chunk
            n_in -= chunk

    def process(self, pcm) -> bytes:
        """Resample PCM16 at in_rate into PCM16 at out_rate."""
        cdef _View src
        _open_in(pcm, &src)
        try:
            _check_even(src.len)
            out = PyBytes_FromStringAndSize(NULL, 2 * self._count(src.len >> 1))
            self._run(src.ptr, src.len >> 1, <uint8_t *>PyBytes_AS_STRING(out))
        finally:
            _close(&src)
        return out

    def process_into(self, pcm, out) -> int:
        """Like process(), writing into out; returns bytes written."""
        cdef _View src
        cdef _View dst
        cdef Py_ssize_t need
        _open_in(pcm, &src)
        try:
            _check_even(src.len)
            _open_out(out, &dst)
            try:
                need = 2 * self._count(src.len >> 1)
                _check_out(need, dst.len)
                self._run(src.ptr, src.len >> 1, dst.ptr)
            finally:
                _close(&dst)
        finally:
            _close(&src)
        return need

    def __repr__(self) -> str:
        return f"Resampler({self.in_rate}, {self.out_rate})"
