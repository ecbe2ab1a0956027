"""relay.cooperate.pause: a greenlet whose timer has expired runs before a long batch goes on."""

import time

import gevent

from relay.cooperate import pause


def _busy_batch(order, yield_between):
    for step in range(3):
        busy_until = time.perf_counter() + 0.002
        while time.perf_counter() < busy_until:
            pass                    # CPU work: the hub does not run meanwhile
        order.append(step)
        yield_between()


def _order_with(yield_between):
    order = []
    batch = gevent.spawn(_busy_batch, order, yield_between)
    gevent.spawn_later(0.001, order.append, "due")      # due during the first step
    batch.join()
    gevent.sleep(0.01)
    return order


def test_pause_lets_an_expired_timer_run_before_the_batch_goes_on():
    assert _order_with(pause) == [0, "due", 1, 2]


def test_sleep_zero_does_not_which_is_why_pause_exists():
    """gevent runs its callbacks before the expired timers: sleep(0) would make the pacer
    wait for the whole batch. If gevent changes this, pause() is still right."""
    assert _order_with(lambda: gevent.sleep(0)) == [0, 1, 2, "due"]
