"""A lower-latency drop-in for aiortc's receive jitter buffer.

aiortc (1.16) releases a frame only when the first packet of the *next* frame arrives, and its
audio buffer also waits for 4 frames (prefetch): 80-100 ms of audio latency on the server's
input and one video frame (40 ms) on a Python client's output. On loopback and on a clean
network that waiting buys nothing. :class:`LowLatencyJitterBuffer` releases a frame as soon as
it is complete and in order: an audio packet (one Opus packet is one frame) as soon as it is
the next in sequence; a video frame when the packet carrying the RTP marker bit (the last
packet of a frame) has arrived and every packet before it is there. Reordering and loss are
still handled by aiortc's logic (a gap holds until it fills or the buffer overflows).

:func:`install` swaps it into an ``RTCRtpReceiver`` (a private attribute of aiortc 1.16, pinned
in pyproject.toml); it returns False and changes nothing when the attribute is not there.
"""
from __future__ import annotations

import logging

from aiortc.jitterbuffer import JitterBuffer, JitterFrame

__all__ = ["LowLatencyJitterBuffer", "install"]

log = logging.getLogger(__name__)
_ATTR = "_RTCRtpReceiver__jitter_buffer"


class LowLatencyJitterBuffer(JitterBuffer):
    """See the module docstring. ``is_video`` selects the marker-bit rule."""

    def _remove_frame(self, sequence_number: int):
        frame = super()._remove_frame(sequence_number)
        if frame is not None:
            return frame
        packets, timestamp = [], None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None
            timestamp = packet.timestamp
            packets.append(packet)
            if not self._is_video or packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)
        return None


def install(receiver, kind: str) -> bool:
    """Replace ``receiver``'s jitter buffer (before media flows); True when done."""
    if not hasattr(receiver, _ATTR):
        log.warning("aiortc has no %s: keeping its own jitter buffer", _ATTR)
        return False
    video = kind == "video"
    setattr(receiver, _ATTR, LowLatencyJitterBuffer(capacity=512 if video else 16, is_video=video))
    return True
