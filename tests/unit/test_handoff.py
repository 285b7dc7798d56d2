"""Which worker the supervisor deals the next DIMSE association to (vna.handoff)."""

from __future__ import annotations

import os
import select
import socket
import time

from vna.handoff import Dispatcher, pick, receive_connection, report_closed, report_ready


def test_the_worker_with_the_fewest_open_associations() -> None:
    assert pick([3, 1, 2], [True, True, True], turn=1) == 1


def test_equals_take_turns_instead_of_piling_on_the_first() -> None:
    active, ready, turn = [0, 0, 0], [True, True, True], -1
    dealt = []
    for _ in range(6):
        turn = pick(active, ready, turn)  # type: ignore[assignment]
        dealt.append(turn)
        active[turn] += 1
    assert dealt == [0, 1, 2, 0, 1, 2]


def test_a_worker_still_starting_gets_nothing() -> None:
    assert pick([5, 0], [True, False], turn=0) == 0
    assert pick([0, 0], [False, False], turn=0) is None


def test_the_dispatcher_deals_accepted_connections_to_ready_workers() -> None:
    dispatcher = Dispatcher("127.0.0.1", 0, 2)
    workers = [socket.socket(fileno=fd) for fd in dispatcher.worker_fds]
    dispatcher.worker_fds = [os.dup(w.fileno()) for w in workers]  # closed by workers_started
    dispatcher.workers_started()
    clients: list[socket.socket] = []
    try:
        report_ready(workers[1])  # worker 0 is still starting
        clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
        conn, peer = _receive(workers[1])
        assert peer[1] == clients[0].getsockname()[1]
        conn.sendall(b"from worker 1")
        assert clients[0].recv(64) == b"from worker 1"  # the very connection, handed over
        conn.close()

        report_ready(workers[0])
        time.sleep(0.2)
        # Worker 1 still counts one open association: the next two go to 0, then in turn.
        dealt = []
        for _ in range(2):
            clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
            dealt.append(_which(workers))
        assert dealt == [0, 1]
        report_closed(workers[1])
        report_closed(workers[1])
        time.sleep(0.2)
        clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
        assert _which(workers) == 1  # one open against two
    finally:
        dispatcher.close()
        for s in (*clients, *workers):
            s.close()


def _receive(worker: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    worker.settimeout(5)
    return receive_connection(worker)


def _which(workers: list[socket.socket]) -> int:
    ready, _, _ = select.select(workers, [], [], 5)
    assert len(ready) == 1
    index = workers.index(ready[0])
    conn, _ = _receive(workers[index])
    conn.close()
    return index
