"""DtmfCollector: terminator, maximum count, inter-digit timeout, bad digits."""

from relay.dtmf import DtmfCollector


def test_terminator_completes_the_result():
    dtmf = DtmfCollector(2.0, 10, "#")
    assert dtmf.digit("1", 0.0) is None
    assert dtmf.digit("2", 0.3) is None
    assert dtmf.digit("#", 0.6) == "12"
    assert dtmf.pending == ""


def test_max_digits_completes_the_result():
    dtmf = DtmfCollector(2.0, 3, "#")
    assert [dtmf.digit(d, i) for i, d in enumerate("123")] == [None, None, "123"]


def test_inter_digit_timeout_completes_the_result():
    dtmf = DtmfCollector(2.0, 10, "#")
    dtmf.digit("4", 10.0)
    dtmf.digit("2", 11.0)
    assert dtmf.poll(12.9) is None
    assert dtmf.deadline() == 13.0
    assert dtmf.poll(13.0) == "42"
    assert dtmf.poll(20.0) is None


def test_a_lone_terminator_and_invalid_digits_give_nothing():
    dtmf = DtmfCollector(2.0, 10, "#")
    assert dtmf.digit("#", 0.0) is None
    assert dtmf.digit("x", 0.0) is None
    assert dtmf.pending == ""


def test_no_terminator_configured_keeps_hash_as_a_digit():
    dtmf = DtmfCollector(2.0, 10, "")
    dtmf.digit("#", 0.0)
    assert dtmf.poll(5.0) == "#"
