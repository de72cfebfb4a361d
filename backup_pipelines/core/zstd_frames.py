"""Where a zstd stream's frames end, read from the framing alone (RFC 8878, section 3.1).

The streaming decompressor that keeps restore memory bounded (`codec._DecompressStage`)
hands out output in fixed-size chunks but cannot say whether its input stopped inside a
frame; a truncated object must not pass as complete. This walker reads only the frame and
block headers and skips block contents, so it costs a few Python steps per 128 KiB block
and never holds more than a header's worth of bytes.
"""

from __future__ import annotations

ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MASK = 0xFFFFFFF0
SKIPPABLE_MAGIC = 0x184D2A50
_DID_SIZES = (0, 1, 2, 4)
_FCS_SIZES = (0, 2, 4, 8)


class FrameWalker:
    """Feed compressed bytes in order; `at_boundary` says whether they end exactly after a frame."""

    def __init__(self) -> None:
        self.frames = 0
        self._need = 4  # bytes the current header field needs
        self._pending = bytearray()  # the header bytes gathered so far
        self._skip = 0  # payload bytes to pass over
        self._state = "magic"
        self._checksum = False
        self._after_skip = "magic"

    @property
    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._pending and not self._skip

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                if not self._skip:
                    self._state = self._after_skip
                continue
            take = min(self._need - len(self._pending), end - pos)
            self._pending += view[pos : pos + take]
            pos += take
            if len(self._pending) == self._need:
                field, self._pending = bytes(self._pending), bytearray()
                self._step(field)

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need

    def _skip_then(self, n: int, state: str, need: int) -> None:
        self._need = need
        if n:
            self._skip, self._after_skip, self._state = n, state, "skip"
        else:
            self._state = state

    def _step(self, field: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(field, "little")
            if magic == ZSTD_MAGIC:
                self._expect("descriptor", 1)
            elif magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC:
                self._expect("skippable_size", 4)
            else:
                self._expect("garbage", 1)  # the decompressor reports what is wrong
        elif self._state == "skippable_size":
            self._end_frame_after(int.from_bytes(field, "little"))
        elif self._state == "descriptor":
            d = field[0]
            single = bool(d & 0x20)
            self._checksum = bool(d & 0x04)
            fcs = _FCS_SIZES[d >> 6] or (1 if single else 0)
            rest = (0 if single else 1) + _DID_SIZES[d & 0x03] + fcs
            self._skip_then(rest, "block", 3)
        elif self._state == "block":
            header = int.from_bytes(field, "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            payload = 1 if kind == 1 else size
            if last:
                self._end_frame_after(payload + (4 if self._checksum else 0))
            else:
                self._skip_then(payload, "block", 3)
        # "garbage": keep consuming; at_boundary stays False

    def _end_frame_after(self, n: int) -> None:
        self.frames += 1
        self._skip_then(n, "magic", 4)
