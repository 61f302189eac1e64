"""FlowControl (mailserver/connections.py), the flow control of every connection, on twisted's StringTransport with
a task.Clock: the reasons to pause reading do not undo each other, output back-pressure holds writers and then
reading, a peer that stops reading is aborted after the stall timeout, and turns wait for output to drain."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from mailserver.connections import OUTPUT, SESSION, TURN, FlowControl

STALL = 300.0


def _flow():
    clock = task.Clock()
    transport = StringTransport()
    flow = FlowControl(clock, clock, STALL, peer="192.0.2.1")
    flow.attach(transport)
    return flow, transport, clock


def test_attach_registers_it_as_the_transports_streaming_producer():
    flow, transport, _ = _flow()
    assert transport.producer is flow and transport.streaming


def test_reasons_to_pause_reading_do_not_undo_each_other():
    """The session's "waiting on the database" and the output's pause are separate: lifting one keeps the other."""
    flow, transport, _ = _flow()
    flow.pause_reading(SESSION)
    flow.pauseProducing()  # the transport's buffer is full
    flow.received()  # and input arrives meanwhile
    assert transport.producerState == "paused"
    flow.resume_reading(SESSION)
    assert transport.producerState == "paused" and not flow.reading
    flow.resumeProducing()  # drained
    assert transport.producerState == "producing" and flow.reading


def test_output_back_pressure_does_not_pause_reading_until_input_arrives():
    """A TLS handshake that is not finished holds the first writes back and pauses the producer; it needs reading,
    so reading stops only once application input arrives while output is blocked."""
    flow, transport, _ = _flow()
    flow.pauseProducing()
    assert flow.output_blocked and transport.producerState == "producing"
    flow.received()
    assert transport.producerState == "paused"


def test_writers_wait_until_the_transport_drains():
    flow, _, _ = _flow()
    assert flow.writable() is None
    flow.pauseProducing()
    d = flow.writable()
    assert d is not None and not d.called
    flow.resumeProducing()
    assert d.called and flow.writable() is None


def test_a_waiter_that_fills_the_buffer_again_keeps_reading_paused():
    flow, transport, _ = _flow()
    flow.pauseProducing()
    flow.received()
    d = flow.writable()
    d.addCallback(lambda _: flow.pauseProducing())  # writes, and the buffer is over its bound again
    flow.resumeProducing()
    assert flow.output_blocked and transport.producerState == "paused"


def test_stall_timeout_aborts_a_peer_that_does_not_read():
    flow, transport, clock = _flow()
    flow.pauseProducing()
    clock.advance(STALL - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting  # StringTransport.abortConnection
    assert flow.stopped


def test_stall_timer_is_cancelled_when_output_drains():
    flow, transport, clock = _flow()
    flow.pauseProducing()
    clock.advance(STALL - 1)
    flow.resumeProducing()
    clock.advance(STALL * 2)
    assert not transport.disconnecting
    flow.pauseProducing()  # a new stall starts a new timer
    assert clock.getDelayedCalls()


def test_next_turn_runs_later_with_reading_paused_and_waits_for_output():
    flow, transport, clock = _flow()
    ran = []
    flow.next_turn(lambda: ran.append(1))
    assert transport.producerState == "paused" and not ran
    flow.pauseProducing()  # output backs up before the turn comes
    clock.advance(0)
    assert not ran  # the turn waits for the drain
    flow.resumeProducing()
    clock.advance(0)
    assert ran == [1] and transport.producerState == "producing"


def test_a_turn_that_yields_again_keeps_reading_paused():
    flow, transport, clock = _flow()
    calls = []

    def turn():
        calls.append(transport.producerState)
        if len(calls) < 3:
            flow.next_turn(turn)

    flow.next_turn(turn)
    clock.advance(0)  # a task.Clock runs the turns scheduled meanwhile in the same advance
    assert calls == ["paused"] * 3 and transport.producerState == "producing"
    assert TURN not in flow._reasons


def test_stop_fails_waiters_and_cancels_timers():
    flow, _, clock = _flow()
    flow.pauseProducing()
    d = flow.writable()
    flow.next_turn(lambda: pytest.fail("a turn after stop"))
    flow.stop()
    failures = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ConnectionError)
    clock.advance(STALL * 2)
    assert not clock.getDelayedCalls()


def test_downstream_producer_is_told_of_back_pressure():
    """The HTTP channel, registered behind the flow control, is paused and resumed with the transport."""
    flow, _, _ = _flow()
    channel = StringTransport()  # any IPushProducer
    flow.downstream = channel
    flow.pauseProducing()
    assert channel.producerState == "paused"
    flow.resumeProducing()
    assert channel.producerState == "producing"


def test_output_reason_is_named_output():
    flow, _, _ = _flow()
    flow.pauseProducing()
    flow.received()
    assert flow._reasons == {OUTPUT}


def test_pause_on_input_pauses_only_when_input_arrives_and_resume_cancels_it():
    """A session waiting for its own work while the client waits for the reply never stops reading; input that
    arrives meanwhile pauses it (that read is the only one taken in) until the reason is lifted."""
    flow, transport, _ = _flow()
    flow.set_reading(SESSION, False, on_input=True)
    assert flow.reading and transport.producerState == "producing"
    flow.set_reading(SESSION, True)  # the check finished before the client sent anything: nothing to undo
    assert flow.reading and transport.producerState == "producing"
    flow.received()
    assert flow.reading  # the earlier reason was lifted: input arriving now pauses nothing
    flow.set_reading(SESSION, False, on_input=True)
    flow.received()
    assert not flow.reading and transport.producerState == "paused"
    flow.set_reading(SESSION, True)
    assert flow.reading and transport.producerState == "producing"
