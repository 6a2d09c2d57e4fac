# Event-camera wire decoders: spikeline._ext.evio.
#   Evt2Decoder, Evt3Decoder (Prophesee RAW EVT 2.0 / 3.0), DatDecoder (Prophesee/N-CARS .dat records),
#   AEStreamDecoder (AEStream's UDP datagrams of little-endian uint32 words).
#
# Why the kernels are shaped this way:
# - One decoder object per stream holds the format's state (EVT2 time high; EVT3 time high/low, current
#   y, vector base x and polarity; DAT 32-bit time and its wrap count). decode(data, out) consumes whole
#   words only and stops before a word whose events would not fit into `out`, so the caller can feed the
#   file in any split of its bytes (it keeps the 0-3 trailing bytes of a partial word) and gets exactly
#   the whole-file decode: the state carries across calls. `position` is the byte offset in the file of
#   the next word, so errors name the file offset.
# - Validation happens in the loop (one compare per event): coordinates outside the declared sensor,
#   unknown word types, events before the first time base, time high going backwards (other than a wrap
#   of its field), DAT polarity field > 1. The loop stops at the first bad word, returns an error code and
#   the def raises ValueError("byte offset N: what"); the readers turn it into EventFormatError.
#   What the formats allow: EVT2 CD times are time_high << 6 | 6-bit time low, EVT3 TIME_LOW words are
#   free within a time-high period (real Gen4.1 files step back a few microseconds after a repeated
#   TIME_HIGH), so event times may go back by less than one time-low period (64 us / 4096 us); time high
#   may not. A decrease of more than half the time-high field is a wrap (EVT2: 2^34 us, EVT3: 2^24 us);
#   DAT times are 32-bit with the same half-range rule.
# - Words are read with memcpy (alignment-safe; one load on x86/aarch64), little-endian as the files are.
# - The output is the 16-byte EVENT_DTYPE record (t int64, x, y uint16, p int8): event_t below has the
#   same layout. The loops run with the GIL released and never allocate.
# - The numpy references (bit-identical outputs, same error offsets and messages) are in
#   spikeline.events.formats (_Evt2DecoderRef, ...) and spikeline.events.udp (AEStreamDecoderRef).

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    static inline int spk_ctz(unsigned int v) { unsigned long i; _BitScanForward(&i, v); return (int)i; }
    static inline int spk_hibit(unsigned int v) { unsigned long i; _BitScanReverse(&i, v); return (int)i; }
    static inline int spk_popcount(unsigned int v) { return (int)__popcnt(v); }
    #else
    static inline int spk_ctz(unsigned int v) { return __builtin_ctz(v); }
    static inline int spk_hibit(unsigned int v) { return 31 - __builtin_clz(v); }
    static inline int spk_popcount(unsigned int v) { return __builtin_popcount(v); }
    #endif
    """
    int spk_ctz(unsigned int v) noexcept nogil
    int spk_hibit(unsigned int v) noexcept nogil
    int spk_popcount(unsigned int v) noexcept nogil


ctypedef struct event_t:
    int64_t t
    uint16_t x
    uint16_t y
    int8_t p


EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")], align=True)
assert EVENT_DTYPE.itemsize == sizeof(event_t)

# error codes of the loops
cdef enum:
    E_OK = 0
    E_TYPE = 1       # unknown word type (a = type)
    E_X = 2          # x outside the sensor (a = x)
    E_Y = 3          # y outside the sensor (a = y)
    E_BACK = 4       # time (high) went backwards (a = new, b = previous)
    E_NO_TIME = 5    # event before the first time base
    E_NO_Y = 6       # EVT3 event before the first EVT_ADDR_Y
    E_NO_BASE = 7    # EVT3 vector before the first VECT_BASE_X
    E_P = 8          # DAT polarity field > 1 (a = field)


def error_message(str fmt, int code, int64_t a, int64_t b, int width, int height):
    """The text of a decoder error (shared wording with the numpy references)."""
    if code == E_TYPE:
        return f"unknown {fmt} word type 0x{a:X}"
    if code == E_X:
        return f"x = {a} outside the sensor (width {width})"
    if code == E_Y:
        return f"y = {a} outside the sensor (height {height})"
    if code == E_BACK:
        return f"time goes backwards ({b} -> {a}) beyond what {fmt} allows"
    if code == E_NO_TIME:
        return f"{fmt} event before the first time base (TIME_HIGH)"
    if code == E_NO_Y:
        return f"{fmt} event before the first EVT_ADDR_Y"
    if code == E_NO_BASE:
        return f"{fmt} vector event before the first VECT_BASE_X"
    if code == E_P:
        return f"polarity field {a} is not 0 or 1"
    return f"decoder error {code}"


cdef inline uint32_t _ld32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint16_t _ld16(const uint8_t* p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef event_t* _out_ptr(object out, Py_ssize_t* cap) except NULL:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array of EVENT_DTYPE, got {type(out).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>out
    if arr.dtype != EVENT_DTYPE or arr.ndim != 1 or not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError("out must be a writable C-contiguous 1-D EVENT_DTYPE array, "
                         f"got {out.dtype} {out.shape}")
    cap[0] = arr.shape[0]
    return <event_t*>cnp.PyArray_DATA(arr)


cdef void _check_sensor(int width, int height) except *:
    if not (0 < width <= 65536 and 0 < height <= 65536):
        raise ValueError(f"sensor size must be within 1..65536, got ({width}, {height})")


cdef class _Decoder:
    cdef readonly int width
    cdef readonly int height
    cdef public int64_t position
    cdef int64_t err_a
    cdef int64_t err_b

    cdef str _fmt(self):
        return "?"

    cdef _raise(self, int code, Py_ssize_t byte_index):
        self.position += byte_index
        raise ValueError(f"byte offset {self.position}: "
                         + error_message(self._fmt(), code, self.err_a, self.err_b, self.width, self.height))


cdef class Evt2Decoder(_Decoder):
    """Prophesee EVT 2.0: 32-bit words, type in bits 28-31 (CD_OFF 0, CD_ON 1, EVT_TIME_HIGH 8,
    EXT_TRIGGER 0xA, OTHERS 0xE, CONTINUED 0xF); CD: time low bits 22-27, x bits 11-21, y bits 0-10."""

    cdef uint64_t time_high   # last 28-bit EVT_TIME_HIGH field
    cdef uint64_t loops       # wraps of the 28-bit field
    cdef bint have_time

    def __init__(self, int width, int height, int64_t position=0):
        _check_sensor(width, height)
        self.width = width
        self.height = height
        self.position = position
        self.reset()

    cdef str _fmt(self):
        return "EVT 2.0"

    def reset(self):
        self.time_high = 0
        self.loops = 0
        self.have_time = False

    @property
    def word_bytes(self):
        return 4

    @property
    def state(self):
        return {"time_high": int(self.time_high), "loops": int(self.loops), "have_time": bool(self.have_time)}

    @state.setter
    def state(self, value):
        self.time_high = int(value["time_high"])
        self.loops = int(value["loops"])
        self.have_time = bool(value["have_time"])

    def decode(self, const uint8_t[::1] data, out):
        """Decode the whole words of `data` into `out`: (events written, bytes consumed)."""
        cdef Py_ssize_t cap
        cdef event_t* o = _out_ptr(out, &cap)
        cdef Py_ssize_t nw = data.shape[0] // 4
        if nw == 0 or cap == 0:
            return 0, 0
        cdef const uint8_t* src = &data[0]
        cdef Py_ssize_t j = 0, i = 0
        cdef int code = E_OK
        cdef uint32_t w, ty, x, y, v
        cdef uint64_t th = self.time_high, loops = self.loops
        cdef bint have = self.have_time
        cdef uint64_t base = ((loops << 28) | th) << 6
        cdef uint32_t width = self.width, height = self.height
        with nogil:
            while j < nw:
                w = _ld32(src + 4 * j)
                ty = w >> 28
                if ty <= 1:
                    if i >= cap:
                        break
                    if not have:
                        code = E_NO_TIME
                        break
                    x = (w >> 11) & 0x7FF
                    y = w & 0x7FF
                    if x >= width:
                        code = E_X
                        self.err_a = x
                        break
                    if y >= height:
                        code = E_Y
                        self.err_a = y
                        break
                    o[i].t = <int64_t>(base | ((w >> 22) & 0x3F))
                    o[i].x = <uint16_t>x
                    o[i].y = <uint16_t>y
                    o[i].p = <int8_t>ty
                    i += 1
                elif ty == 8:
                    v = w & 0xFFFFFFF
                    if have and v < th:
                        if th - v > (1 << 27):
                            loops += 1
                        else:
                            code = E_BACK
                            self.err_a = <int64_t>(((loops << 28) | v) << 6)
                            self.err_b = <int64_t>base
                            break
                    th = v
                    have = True
                    base = ((loops << 28) | th) << 6
                elif ty != 0xA and ty != 0xE and ty != 0xF:
                    code = E_TYPE
                    self.err_a = ty
                    break
                j += 1
        self.time_high = th
        self.loops = loops
        self.have_time = have
        if code != E_OK:
            self._raise(code, 4 * j)
        self.position += 4 * j
        return i, 4 * j


cdef class Evt3Decoder(_Decoder):
    """Prophesee EVT 3.0: 16-bit words, type in bits 12-15: EVT_ADDR_Y 0x0 (y bits 0-10), EVT_ADDR_X 0x2
    (pol bit 11, x bits 0-10: one event), VECT_BASE_X 0x3 (pol bit 11, x bits 0-10), VECT_12 0x4 and
    VECT_8 0x5 (a bit mask of events at base_x + k; base_x then advances by 12 / 8), EVT_TIME_LOW 0x6
    and EVT_TIME_HIGH 0x8 (12 bits each of a 24-bit microsecond time), CONTINUED_4 0x7, EXT_TRIGGER 0xA,
    OTHERS 0xE, CONTINUED_12 0xF. TIME_HIGH keeps the last TIME_LOW (as expelliarmus and OpenEB do)."""

    cdef uint64_t time_high, time_low, loops
    cdef bint have_time, have_y, have_base
    cdef uint32_t cur_y, base_x, pol

    def __init__(self, int width, int height, int64_t position=0):
        _check_sensor(width, height)
        self.width = width
        self.height = height
        self.position = position
        self.reset()

    cdef str _fmt(self):
        return "EVT 3.0"

    def reset(self):
        self.time_high = self.time_low = self.loops = 0
        self.have_time = self.have_y = self.have_base = False
        self.cur_y = self.base_x = self.pol = 0

    @property
    def word_bytes(self):
        return 2

    @property
    def state(self):
        return {"time_high": int(self.time_high), "time_low": int(self.time_low), "loops": int(self.loops),
                "have_time": bool(self.have_time), "have_y": bool(self.have_y),
                "have_base": bool(self.have_base), "y": int(self.cur_y), "base_x": int(self.base_x),
                "pol": int(self.pol)}

    @state.setter
    def state(self, value):
        self.time_high = int(value["time_high"])
        self.time_low = int(value["time_low"])
        self.loops = int(value["loops"])
        self.have_time = bool(value["have_time"])
        self.have_y = bool(value["have_y"])
        self.have_base = bool(value["have_base"])
        self.cur_y = int(value["y"])
        self.base_x = int(value["base_x"])
        self.pol = int(value["pol"])

    def decode(self, const uint8_t[::1] data, out):
        """Decode the whole words of `data` into `out`: (events written, bytes consumed)."""
        cdef Py_ssize_t cap
        cdef event_t* o = _out_ptr(out, &cap)
        cdef Py_ssize_t nw = data.shape[0] // 2
        if nw == 0 or cap == 0:
            return 0, 0
        cdef const uint8_t* src = &data[0]
        cdef Py_ssize_t j = 0, i = 0
        cdef int code = E_OK, k, n
        cdef uint32_t w, ty, x, v, m
        cdef uint64_t th = self.time_high, tl = self.time_low, loops = self.loops
        cdef int64_t t = <int64_t>((loops << 24) | (th << 12) | tl)
        cdef bint have_t = self.have_time, have_y = self.have_y, have_b = self.have_base
        cdef uint32_t y = self.cur_y, bx = self.base_x, pol = self.pol
        cdef uint32_t width = self.width, height = self.height
        with nogil:
            while j < nw:
                w = _ld16(src + 2 * j)
                ty = w >> 12
                if ty == 0x2:  # EVT_ADDR_X
                    if i >= cap:
                        break
                    if not have_t:
                        code = E_NO_TIME
                        break
                    if not have_y:
                        code = E_NO_Y
                        break
                    x = w & 0x7FF
                    if x >= width:
                        code = E_X
                        self.err_a = x
                        break
                    if y >= height:
                        code = E_Y
                        self.err_a = y
                        break
                    o[i].t = t
                    o[i].x = <uint16_t>x
                    o[i].y = <uint16_t>y
                    o[i].p = <int8_t>((w >> 11) & 1)
                    i += 1
                elif ty == 0x4 or ty == 0x5:  # VECT_12, VECT_8
                    if ty == 0x4:
                        m = w & 0xFFF
                        n = 12
                    else:
                        m = w & 0xFF
                        n = 8
                    if m and i + spk_popcount(m) > cap:
                        break
                    if not have_b:
                        code = E_NO_BASE
                        break
                    if m:
                        if not have_t:
                            code = E_NO_TIME
                            break
                        if not have_y:
                            code = E_NO_Y
                            break
                        if bx + <uint32_t>spk_hibit(m) >= width:
                            code = E_X
                            self.err_a = bx + spk_hibit(m)
                            break
                        if y >= height:
                            code = E_Y
                            self.err_a = y
                            break
                        while m:
                            k = spk_ctz(m)
                            o[i].t = t
                            o[i].x = <uint16_t>(bx + k)
                            o[i].y = <uint16_t>y
                            o[i].p = <int8_t>pol
                            i += 1
                            m &= m - 1
                    bx += n
                elif ty == 0x0:  # EVT_ADDR_Y
                    y = w & 0x7FF
                    have_y = True
                elif ty == 0x3:  # VECT_BASE_X
                    bx = w & 0x7FF
                    pol = (w >> 11) & 1
                    have_b = True
                elif ty == 0x6:  # EVT_TIME_LOW
                    tl = w & 0xFFF
                    t = <int64_t>((loops << 24) | (th << 12) | tl)
                elif ty == 0x8:  # EVT_TIME_HIGH
                    v = w & 0xFFF
                    if have_t and v < th:
                        if th - v > 2048:
                            loops += 1
                        else:
                            code = E_BACK
                            self.err_a = <int64_t>((loops << 24) | (<uint64_t>v << 12) | tl)
                            self.err_b = t
                            break
                    th = v
                    have_t = True
                    t = <int64_t>((loops << 24) | (th << 12) | tl)
                elif ty != 0x7 and ty != 0xA and ty != 0xE and ty != 0xF:
                    code = E_TYPE
                    self.err_a = ty
                    break
                j += 1
        self.time_high = th
        self.time_low = tl
        self.loops = loops
        self.have_time = have_t
        self.have_y = have_y
        self.have_base = have_b
        self.cur_y = y
        self.base_x = bx
        self.pol = pol
        if code != E_OK:
            self._raise(code, 2 * j)
        self.position += 2 * j
        return i, 2 * j


cdef class DatDecoder(_Decoder):
    """Prophesee DAT (N-CARS) CD records, 8 bytes: uint32 time (us), uint32 with x in bits 0-13, y in bits
    14-27 and the polarity in bits 28-31. The 32-bit time wraps (a decrease of more than 2^31)."""

    cdef uint64_t last_t32, loops
    cdef bint have_time

    def __init__(self, int width, int height, int64_t position=0):
        _check_sensor(width, height)
        self.width = width
        self.height = height
        self.position = position
        self.reset()

    cdef str _fmt(self):
        return "DAT"

    def reset(self):
        self.last_t32 = 0
        self.loops = 0
        self.have_time = False

    @property
    def word_bytes(self):
        return 8

    @property
    def state(self):
        return {"last_t32": int(self.last_t32), "loops": int(self.loops), "have_time": bool(self.have_time)}

    @state.setter
    def state(self, value):
        self.last_t32 = int(value["last_t32"])
        self.loops = int(value["loops"])
        self.have_time = bool(value["have_time"])

    def decode(self, const uint8_t[::1] data, out):
        """Decode the whole 8-byte records of `data` into `out`: (events written, bytes consumed)."""
        cdef Py_ssize_t cap
        cdef event_t* o = _out_ptr(out, &cap)
        cdef Py_ssize_t nw = data.shape[0] // 8
        if nw > cap:
            nw = cap
        if nw == 0:
            return 0, 0
        cdef const uint8_t* src = &data[0]
        cdef Py_ssize_t j = 0
        cdef int code = E_OK
        cdef uint32_t ts, w, x, y, p
        cdef uint64_t last = self.last_t32, loops = self.loops
        cdef bint have = self.have_time
        cdef uint32_t width = self.width, height = self.height
        with nogil:
            while j < nw:
                ts = _ld32(src + 8 * j)
                w = _ld32(src + 8 * j + 4)
                if have and ts < last:
                    if last - ts > <uint64_t>2147483648:
                        loops += 1
                    else:
                        code = E_BACK
                        self.err_a = <int64_t>((loops << 32) | ts)
                        self.err_b = <int64_t>((loops << 32) | last)
                        break
                x = w & 0x3FFF
                y = (w >> 14) & 0x3FFF
                p = w >> 28
                if x >= width:
                    code = E_X
                    self.err_a = x
                    break
                if y >= height:
                    code = E_Y
                    self.err_a = y
                    break
                if p > 1:
                    code = E_P
                    self.err_a = p
                    break
                last = ts
                have = True
                o[j].t = <int64_t>((loops << 32) | ts)
                o[j].x = <uint16_t>x
                o[j].y = <uint16_t>y
                o[j].p = <int8_t>p
                j += 1
        self.last_t32 = last
        self.loops = loops
        self.have_time = have
        if code != E_OK:
            self._raise(code, 8 * j)
        self.position += 8 * j
        return j, 8 * j


cdef class AEStreamDecoder:
    """AEStream UDP datagrams: little-endian uint32 words. Bit 31 set: one word per event,
    x = bits 16-30, polarity = bit 15, y = bits 0-14, time = the arrival time. Bit 31 clear: the same
    fields, then a uint32 microsecond timestamp word (unwrapped across its 2^32 wrap: each timestamp is
    taken as the value nearest the previous one). Bad packets and events are counted and skipped, never
    raised: a packet whose length is not a multiple of 4 is rejected whole (rejected_packets,
    bad_length); an event outside the sensor (out_of_sensor) or whose timestamp word is missing at the end
    of the packet (missing_timestamp) is dropped (rejected_events)."""

    cdef readonly int width
    cdef readonly int height
    cdef readonly int64_t packets
    cdef readonly int64_t events
    cdef readonly int64_t rejected_packets
    cdef readonly int64_t rejected_events
    cdef readonly int64_t bad_length
    cdef readonly int64_t out_of_sensor
    cdef readonly int64_t missing_timestamp
    cdef int64_t last_t
    cdef bint have_t

    def __init__(self, sensor):
        width, height = sensor
        _check_sensor(width, height)
        self.width = width
        self.height = height
        self.reset()

    @property
    def sensor(self):
        return (self.width, self.height)

    def reset(self):
        self.last_t = 0
        self.have_t = False
        self.reset_counters()

    def reset_counters(self):
        self.packets = self.events = self.rejected_packets = self.rejected_events = 0
        self.bad_length = self.out_of_sensor = self.missing_timestamp = 0

    @property
    def counters(self):
        return {"packets": int(self.packets), "events": int(self.events),
                "rejected_packets": int(self.rejected_packets), "rejected_events": int(self.rejected_events),
                "bad_length": int(self.bad_length), "out_of_sensor": int(self.out_of_sensor),
                "missing_timestamp": int(self.missing_timestamp)}

    @property
    def state(self):
        return {"last_t": int(self.last_t), "have_t": bool(self.have_t)}

    @state.setter
    def state(self, value):
        self.last_t = int(value["last_t"])
        self.have_t = bool(value["have_t"])

    def decode(self, const uint8_t[::1] packet, int64_t arrival_us, out=None):
        """Events of one datagram (an EVENT_DTYPE array of at most len(packet) // 4 events)."""
        cdef Py_ssize_t nb = packet.shape[0]
        cdef Py_ssize_t nw = nb // 4
        cdef Py_ssize_t cap
        self.packets += 1
        if nb % 4:
            self.rejected_packets += 1
            self.bad_length += 1
            return np.empty(0, dtype=EVENT_DTYPE)
        if out is None:
            out = np.empty(nw, dtype=EVENT_DTYPE)
        cdef event_t* o = _out_ptr(out, &cap)
        if cap < nw:
            raise ValueError(f"out has room for {cap} events; a {nb}-byte packet needs {nw}")
        if nw == 0:
            return out[:0]
        cdef const uint8_t* src = &packet[0]
        cdef Py_ssize_t j = 0, i = 0
        cdef uint32_t w, x, y, ts, last32
        cdef int64_t t, last = self.last_t
        cdef bint have = self.have_t, has_ts
        cdef int64_t bad_xy = 0, missing = 0
        cdef uint32_t width = self.width, height = self.height
        with nogil:
            while j < nw:
                w = _ld32(src + 4 * j)
                has_ts = (w >> 31) == 0
                x = (w >> 16) & 0x7FFF
                y = w & 0x7FFF
                if has_ts:
                    if j + 1 >= nw:
                        missing += 1
                        break
                    ts = _ld32(src + 4 * j + 4)
                    if have:
                        last32 = <uint32_t>last
                        t = last + <int64_t>(<int32_t>(ts - last32))
                    else:
                        t = ts
                    last = t
                    have = True
                    j += 2
                else:
                    t = arrival_us
                    j += 1
                if x >= width or y >= height:
                    bad_xy += 1
                    continue
                o[i].t = t
                o[i].x = <uint16_t>x
                o[i].y = <uint16_t>y
                o[i].p = <int8_t>((w >> 15) & 1)
                i += 1
        self.last_t = last
        self.have_t = have
        self.out_of_sensor += bad_xy
        self.missing_timestamp += missing
        self.rejected_events += bad_xy + missing
        self.events += i
        return out[:i]
