"""Audio passthrough: copy a source's first audio stream, packet by packet, into an output.

No audio is decoded or re-encoded. Packets are interleaved with the video as it is written
(``feed_until``), so the muxer never has to buffer a whole track.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

logger = logging.getLogger(__name__)


class AudioRemuxer:
    """Copies the audio packets of ``source`` into ``output`` in time order.

    Build it before the output's header is written (before the first video packet is muxed).
    If the source has no audio, or the output format cannot hold its codec, a warning is
    logged and every call is a no-op (:attr:`active` is False).

    Args:
        source: Path of the file whose first audio stream is copied.
        output: The open output container.
        start: Source time (seconds) where the output begins: packets that start earlier are
            dropped and the rest are moved earlier by ``start - origin`` (a segment of a clip).
        origin: Source time the output's clock is aligned to (the clip's first video frame, so a
            segment's audio keeps the same offset to its video as in the source).
    """

    def __init__(self, source: str | Path, output: av.container.OutputContainer, start: Fraction | None = None,
                 origin: Fraction = Fraction(0)):
        self.start = start
        self.shift = (start - origin) if start is not None else Fraction(0)
        self.active = False
        self.packets_written = 0
        self._input = None
        self._pending = None
        self._packets = None
        source = Path(source)
        try:
            self._input = av.open(str(source))
        except av.error.FFmpegError as err:
            logger.warning("Audio from %s skipped: the file cannot be opened (%s).", source, err)
            return
        if not self._input.streams.audio:
            logger.info("Audio from %s: the file has no audio stream; the output has none either.", source)
            self.close()
            return
        in_stream = self._input.streams.audio[0]
        codec = in_stream.codec_context.name
        if codec not in output.supported_codecs:
            logger.warning(
                "Audio skipped: %s cannot hold the %s audio of %s; use .mkv to keep it.",
                Path(output.name).suffix or output.format.name, codec, source,
            )
            self.close()
            return
        try:
            self._out_stream = output.add_stream_from_template(in_stream)
        except (av.error.FFmpegError, ValueError) as err:
            logger.warning("Audio skipped: cannot copy the %s audio of %s (%s).", codec, source, err)
            self.close()
            return
        self._output = output
        self._packets = self._input.demux(in_stream)
        self.active = True

    def _next(self):
        if self._pending is None and self._packets is not None:
            for packet in self._packets:
                # The demuxer ends with an empty flush packet (dts None); it is not data.
                if packet.dts is None:
                    continue
                self._pending = packet
                break
            else:
                self._packets = None
        return self._pending

    def feed_until(self, seconds: Fraction | float | None) -> None:
        """Mux every packet that starts before ``seconds`` (None: all that are left).

        Args:
            seconds: Output time in seconds (source time for a whole clip; for a segment, source
                time minus ``start - origin``).
        """
        if not self.active:
            return
        while (packet := self._next()) is not None:
            start = packet.pts if packet.pts is not None else packet.dts
            if self.start is not None and start * packet.time_base < self.start:
                self._pending = None  # before the segment
                continue
            if seconds is not None and start * packet.time_base - self.shift >= seconds:
                return
            self._pending = None
            if self.shift:
                ticks = round(self.shift / packet.time_base)
                packet.pts = packet.pts - ticks if packet.pts is not None else None
                packet.dts = packet.dts - ticks if packet.dts is not None else None
            packet.stream = self._out_stream
            self._output.mux(packet)
            self.packets_written += 1

    def close(self) -> None:
        """Release the source file (the remaining packets are not written)."""
        self._packets = None
        self._pending = None
        if self._input is not None:
            self._input.close()
            self._input = None
