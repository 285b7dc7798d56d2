"""Which worker the supervisor deals the next connection to (vna.handoff)."""

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
    dispatcher = Dispatcher("TEST", "127.0.0.1", 0, 2)
    workers = [socket.socket(fileno=fd) for fd in dispatcher.worker_fds]
    dispatcher.worker_fds = [os.dup(w.fileno()) for w in workers]  # closed by workers_started
    dispatcher.workers_started()
    clients: list[socket.socket] = []
    try:
        report_ready(workers[1])  # worker 0 is still starting
        clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
        # Nothing is dealt until every worker is ready: the client waits in the backlog.
        assert select.select(workers, [], [], 0.5)[0] == []
        assert not dispatcher.all_ready()
        report_ready(workers[0])
        conn, peer = _receive(workers[0])
        assert dispatcher.all_ready()
        assert peer[1] == clients[0].getsockname()[1]
        conn.sendall(b"from worker 0")
        assert clients[0].recv(64) == b"from worker 0"  # the very connection, handed over
        conn.close()

        # Worker 0 still counts one open connection: the next goes to 1, then in turn.
        dealt = []
        for _ in range(3):
            clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
            dealt.append(_which(workers))
        assert dealt == [1, 0, 1]
        report_closed(workers[0])
        report_closed(workers[0])
        time.sleep(0.2)
        clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
        assert _which(workers) == 0  # none open against two

        # A worker that is gone (its channel closed) gets nothing more.
        workers[0].close()
        time.sleep(0.2)
        for _ in range(2):
            clients.append(socket.create_connection(("127.0.0.1", dispatcher.port)))
            conn, _ = _receive(workers[1])
            conn.close()
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
