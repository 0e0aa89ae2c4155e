"""The framer: complete telegrams out of arbitrary chunks, resynchronised after any damage, in
bounded memory. Unit cases for each field quirk, then properties over random streams."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p1 import Framer, iter_telegrams, parse_telegram
from p1.framing import DEFAULT_MAX_BUFFER

FIXTURES = Path(__file__).parent / "fixtures" / "p1"
SAMPLES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.txt"))]
EMUCS = (FIXTURES / "be_emucs_fluvius_v171_gas_water.txt").read_bytes()
DSMR5 = (FIXTURES / "nl_dsmr50_iskra_mt382.txt").read_bytes()
DSMR22 = (FIXTURES / "nl_dsmr22_iskra_mt382_no_crc.txt").read_bytes()
UNPADDED = (FIXTURES / "nl_dsmr50_warmtelink_heat_unpadded_crc.txt").read_bytes()


def feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def test_stream_of_all_samples_in_one_chunk() -> None:
    framer = Framer()
    assert framer.feed(b"".join(SAMPLES)) == SAMPLES
    assert framer.discarded_bytes == 0 and framer.buffered == 0 and framer.frames == len(SAMPLES)


def test_byte_by_byte_as_a_slow_serial_port() -> None:
    stream = b"".join(SAMPLES)
    assert feed_all(Framer(), [stream[i : i + 1] for i in range(len(stream))]) == SAMPLES


def test_garbage_before_and_between_is_discarded_and_counted() -> None:
    noise = b"\x00\xff\x13line noise\r\n!12\r\n"
    framer = Framer()
    assert framer.feed(noise + EMUCS + noise + DSMR5) == [EMUCS, DSMR5]
    assert framer.discarded_bytes == 2 * len(noise)


def test_telegram_cut_short_is_dropped_at_the_next_header() -> None:
    framer = Framer()
    frames = feed_all(framer, [EMUCS[:500], DSMR5])  # the cable was plugged in mid-telegram, or bytes were lost
    assert frames == [DSMR5]
    assert framer.discarded_bytes == 500


def test_header_glued_after_the_crc_line() -> None:
    crc_end = EMUCS.rindex(b"\r\n")  # "!3AD7" with its CRLF missing, next header right after
    glued = EMUCS[:crc_end] + DSMR5
    frames = Framer().feed(glued)
    assert frames == [EMUCS[:crc_end], DSMR5]
    assert [parse_telegram(f).crc_ok for f in frames] == [True, True]
    # CR present, LF missing
    frames = Framer().feed(EMUCS[:crc_end] + b"\r" + DSMR5)
    assert frames == [EMUCS[:crc_end] + b"\r", DSMR5]


def test_unpadded_three_digit_crc_and_no_crc_telegrams() -> None:
    framer = Framer()
    assert framer.feed(UNPADDED[:-2]) == []  # "!B9F" seen, the line may still go on
    assert framer.feed(UNPADDED[-2:]) == [UNPADDED]
    assert parse_telegram(UNPADDED).crc_ok is True
    assert Framer().feed(DSMR22 + DSMR22) == [DSMR22, DSMR22]  # "!\r\n": DSMR 2.2 has no CRC


def test_frame_waits_for_its_crc_line() -> None:
    framer = Framer()
    bang = EMUCS.rindex(b"!")
    for cut in range(bang, len(EMUCS)):
        framer = Framer()
        assert framer.feed(EMUCS[:cut]) == []
        assert framer.feed(EMUCS[cut:]) == [EMUCS]


def test_flush_returns_a_last_telegram_without_line_end() -> None:
    framer = Framer()
    assert framer.feed(EMUCS[:-2]) == []
    assert framer.flush() == [EMUCS[:-2]]
    assert parse_telegram(EMUCS[:-2]).crc_ok is True
    assert framer.buffered == 0
    framer.feed(EMUCS[:300])  # no '!' yet: nothing to flush, the partial telegram is discarded
    assert framer.flush() == [] and framer.buffered == 0


def test_stream_without_end_marker_stays_within_max_buffer() -> None:
    framer = Framer(max_buffer=4096)
    chunk = b"1-0:1.8.1(000123.456*kWh)\r\n" * 40  # ~1 KiB, no '/' and no '!'
    framer.feed(b"/ISK5\\2MT382-1000\r\n\r\n")
    peak = 0
    for _ in range(1000):  # 1 MiB
        assert framer.feed(chunk) == []
        peak = max(peak, framer.buffered)
    assert peak <= 4096
    assert framer.overflows >= 1
    assert framer.feed(DSMR5) == [DSMR5]  # and it recovers at the next header


def test_stream_without_header_keeps_nothing() -> None:
    framer = Framer()
    for _ in range(100):
        framer.feed(b"x" * 10_000 + b"!ABCD\r\n")
        assert framer.buffered == 0
    assert framer.discarded_bytes == 100 * 10_007


def test_oversized_telegram_is_dropped_whatever_the_chunking() -> None:
    huge = b"/HUGE5\r\n\r\n" + b"0-0:96.13.0(" + b"41" * 5000 + b")\r\n!0000\r\n"
    one = Framer(max_buffer=4096)
    assert one.feed(huge + DSMR5) == [DSMR5] and one.overflows == 1
    many = Framer(max_buffer=4096)
    assert feed_all(many, [huge[i : i + 100] for i in range(0, len(huge), 100)] + [DSMR5]) == [DSMR5]
    assert many.overflows == 1


def test_reset_forgets_a_partial_telegram() -> None:
    framer = Framer()
    framer.feed(EMUCS[:400])
    framer.reset()
    assert framer.feed(EMUCS[400:]) == []
    assert framer.feed(DSMR5) == [DSMR5]


def test_max_buffer_must_be_sensible() -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        Framer(max_buffer=4)
    assert Framer().max_buffer == DEFAULT_MAX_BUFFER


def test_iter_telegrams_over_chunks() -> None:
    stream = b"junk" + EMUCS + DSMR22 + DSMR5[:-2]  # last one cut before its CRLF
    chunks = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    telegrams = list(iter_telegrams(chunks))
    assert [t.crc_ok for t in telegrams] == [True, None, True]
    assert telegrams[2].raw == DSMR5[:-2]


# -- properties ------------------------------------------------------------------------------------

sample = st.sampled_from(SAMPLES)
noise = st.binary(max_size=600) | st.lists(st.sampled_from([b"/", b"!", b"\r\n", b"AB", b"1-0:1.8.1(", b")", b"\x00"]), max_size=40).map(b"".join)


def check_frame_shape(frame: bytes) -> None:
    assert frame[:1] == b"/" and frame.count(b"/") == 1 and frame.count(b"!") == 1


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=2000), max_size=8))
def test_random_bytes_never_break_the_framer(chunks: list[bytes]) -> None:
    framer = Framer(max_buffer=1024)
    for chunk in chunks:
        for frame in framer.feed(chunk):
            check_frame_shape(frame)
            assert len(frame) <= 1024 + 5
            parse_telegram(frame)  # never raises
        assert framer.buffered <= 1024 + 5
    for frame in framer.flush():
        check_frame_shape(frame)


@settings(max_examples=300)
@given(noise, sample)
def test_valid_telegram_after_any_garbage_is_found(garbage: bytes, telegram: bytes) -> None:
    frames = Framer().feed(garbage + telegram)
    assert frames and frames[-1] == telegram
    for frame in frames:
        check_frame_shape(frame)


@settings(max_examples=300)
@given(st.lists(st.tuples(noise, sample), min_size=1, max_size=5), st.data())
def test_splitting_the_stream_anywhere_gives_the_same_telegrams(parts: list[tuple[bytes, bytes]], data: st.DataObject) -> None:
    stream = b"".join(g + t for g, t in parts)
    whole = Framer(max_buffer=2048)
    expected = whole.feed(stream) + whole.flush()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    bounds = [0, *cuts, len(stream)]
    split = Framer(max_buffer=2048)
    got = feed_all(split, [stream[a:b] for a, b in itertools.pairwise(bounds)]) + split.flush()
    assert got == expected
    # every telegram that was followed by its CRLF is among them, in order
    telegrams = [t for _, t in parts]
    it = iter(got)
    assert all(any(f == t for f in it) for t in telegrams if len(t) <= 2048)
