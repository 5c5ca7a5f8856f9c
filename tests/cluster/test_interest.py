"""The SUBACKs that wait for nats-server to confirm a node's new subscriptions
(cluster/interest.py), with a fake probe in place of the round trip to NATS."""

from __future__ import annotations

import asyncio

import pytest

from mqttd.cluster.interest import InterestConfirmations


class Probe:
    """A probe the test answers: each call waits for `answer()` or `fail()`."""

    def __init__(self) -> None:
        self.calls = 0
        self._waiting: list[asyncio.Future[None]] = []

    async def __call__(self) -> None:
        self.calls += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        await future

    def answer(self) -> None:
        self._waiting.pop(0).set_result(None)

    def fail(self) -> None:
        self._waiting.pop(0).set_exception(TimeoutError())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_suback_waits_for_a_probe_sent_after_its_sub() -> None:
    probe = Probe()
    interest = InterestConfirmations(probe, timeout=5)
    answered: list[str] = []
    interest.subscribing("t.a")
    assert interest.wait(["t.a", "t.b"], lambda: answered.append("first"))
    await settle()
    assert probe.calls == 0  # the SUB is not even sent yet: nothing to probe for
    interest.sent()
    interest.kick()
    await settle()
    assert probe.calls == 1 and answered == []
    # A second SUB sent while the probe is out needs a probe of its own.
    interest.subscribing("t.b")
    assert interest.wait(["t.b"], lambda: answered.append("second"))
    interest.sent()
    interest.kick()
    probe.answer()
    await settle()
    assert answered == ["first"] and probe.calls == 2
    probe.answer()
    await settle()
    assert answered == ["first", "second"]
    # Confirmed subjects no longer wait; an UNSUB and a new SUB do again.
    assert not interest.wait(["t.a", "t.b"], lambda: answered.append("never"))
    interest.unsubscribing("t.a")
    interest.subscribing("t.a")
    assert interest.wait(["t.a"], lambda: answered.append("third"))
    assert (interest.waits, interest.unconfirmed) == (3, 0)
    await interest.close()


async def test_a_failed_probe_answers_anyway_and_counts_it() -> None:
    probe = Probe()
    interest = InterestConfirmations(probe, timeout=5)
    answered: list[int] = []
    interest.subscribing("t.a")
    assert interest.wait(["t.a"], lambda: answered.append(1))
    interest.sent()
    interest.kick()
    await settle()
    probe.fail()
    await settle()
    assert answered == [1] and interest.unconfirmed == 1
    await interest.close()


async def test_a_suback_is_answered_after_the_timeout_when_nothing_answers() -> None:
    probe = Probe()
    interest = InterestConfirmations(probe, timeout=0.05)
    answered: list[int] = []
    interest.subscribing("t.a")
    assert interest.wait(["t.a"], lambda: answered.append(1))  # never even sent
    await asyncio.sleep(0.2)
    assert answered == [1] and interest.unconfirmed == 1
    await interest.close()


@pytest.mark.parametrize("fails", [False, True])
async def test_an_answer_that_raises_is_logged_and_the_others_still_go(
    fails: bool, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe()
    interest = InterestConfirmations(probe, timeout=5)
    answered: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    interest.subscribing("t.a")
    assert interest.wait(["t.a"], broken)
    assert interest.wait(["t.a"], lambda: answered.append(2))
    interest.sent()
    interest.kick()
    await settle()
    probe.fail() if fails else probe.answer()
    await settle()
    assert answered == [2]
    assert "answering a SUBSCRIBE failed" in caplog.text
    await interest.close()
