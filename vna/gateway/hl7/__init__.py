"""HL7 v2 ADT over MLLP: the listener ``vna serve`` starts when ``[hl7]`` is configured."""

from vna.gateway.hl7.listener import Hl7Listener

__all__ = ["Hl7Listener"]
