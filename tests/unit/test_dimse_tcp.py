"""When the archive asks the kernel to acknowledge at once: after the PDU that ends a DIMSE
message (vna.dicom.tcp.ends_message), and no other."""

from __future__ import annotations

import struct

from vna.dicom.tcp import ends_message


def _p_data(*pdvs: tuple[int, bytes]) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) of (message control header, fragment) items."""
    items = b"".join(
        struct.pack(">IBB", len(data) + 2, 1, control) + data for control, data in pdvs
    )
    return struct.pack(">BBI", 0x04, 0, len(items)) + items


def test_the_last_fragment_of_a_command_or_data_set_ends_a_message() -> None:
    assert ends_message(_p_data((0b11, b"command")))  # command, last fragment
    assert ends_message(_p_data((0b10, b"last slice of the data set")))
    assert ends_message(_p_data((0b00, b"more"), (0b10, b"end")))


def test_a_fragment_with_more_to_come_does_not() -> None:
    assert not ends_message(_p_data((0b00, b"a slice of pixel data")))
    assert not ends_message(_p_data((0b10, b"end"), (0b00, b"next message begins")))


def test_other_pdus_do_not() -> None:
    release_rq = struct.pack(">BBIxxxx", 0x05, 0, 4)
    assert not ends_message(release_rq)
    assert not ends_message(b"\x04\x00")
