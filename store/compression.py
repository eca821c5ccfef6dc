"""Event state compressed with zstd and a dictionary trained on callback events (a small
input has no history of its own to refer to).

Every frame names its dictionary, so a later dictionary is a new file beside the old ones and
older data stays readable. State without zstd's magic number is plain JSON, read as it is."""

from __future__ import annotations

import threading
from pathlib import Path

import zstandard
from eventsourcing.persistence import Compressor

MAGIC = b"\x28\xb5\x2f\xfd"  # every zstd frame starts with it; JSON never does
DICTIONARIES = Path(__file__).parent / "dictionaries"
# Written with the newest; `events-<version>.zdict` files are never changed once shipped.
CURRENT_VERSION = 2
# zstd reserves ids below 32768 and from 2**31 up; ours are this plus the version.
DICT_ID_BASE = 0x43424C00
LEVEL = 3
# The envelope's frames (store.envelope): no magic number nor dictionary id (the envelope
# names it), nor the content's size, which would tell the personal part's size.
PAIR_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    LEVEL,
    format=zstandard.FORMAT_ZSTD1_MAGICLESS,
    write_dict_id=False,
    write_content_size=False,
    write_checksum=False,
)


def dictionary_path(version: int) -> Path:
    return DICTIONARIES / f"events-{version}.zdict"


def _load_dictionaries() -> dict[int, zstandard.ZstdCompressionDict]:
    found = {}
    for path in sorted(DICTIONARIES.glob("events-*.zdict")):
        dictionary = zstandard.ZstdCompressionDict(path.read_bytes())
        found[dictionary.dict_id()] = dictionary
    return found


class StateCompressor(Compressor):
    """The library's compressor hook and the projections' decoder. zstandard's objects are not
    thread-safe: one each per thread."""

    def __init__(self) -> None:
        self._dictionaries = _load_dictionaries()
        self._current = DICT_ID_BASE + CURRENT_VERSION
        if self._current not in self._dictionaries:
            raise RuntimeError(f"missing {dictionary_path(CURRENT_VERSION)}")
        self._dictionaries[self._current].precompute_compress(level=LEVEL)
        self._local = threading.local()

    def compress(self, data: bytes) -> bytes:
        try:
            compressor = self._local.compressor
        except AttributeError:
            compressor = self._local.compressor = zstandard.ZstdCompressor(
                level=LEVEL,
                dict_data=self._dictionaries[self._current],
                # No checksum: the databases check their pages already.
                write_content_size=True,
                write_checksum=False,
            )
        compressed: bytes = compressor.compress(data)
        return compressed

    @property
    def version(self) -> int:
        """The dictionary `compress_pair` writes with."""
        return self._current - DICT_ID_BASE

    def compress_pair(self, first: bytes, second: bytes) -> tuple[bytes, bytes]:
        """Two inputs as one frame, cut after the first: the first piece decompresses alone
        (and depends on `first` alone), the second refers to the first."""
        try:
            compressor = self._local.pair_compressor
        except AttributeError:
            compressor = self._local.pair_compressor = zstandard.ZstdCompressor(
                dict_data=self._dictionaries[self._current], compression_params=PAIR_PARAMS
            )
        stream = compressor.compressobj()
        head = stream.compress(first) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return head, stream.compress(second) + stream.flush()

    def decompress_pair(
        self, version: int, head: bytes, tail: bytes | None = None
    ) -> tuple[bytes, bytes | None]:
        """`compress_pair`'s inputs back (the second None without its piece)."""
        stream = self._decompressor(DICT_ID_BASE + version, magicless=True).decompressobj()
        first = stream.decompress(head)
        if tail is None:
            return first, None
        second = stream.decompress(tail)
        if not stream.eof:  # the head cannot be checked so: it ends mid-frame by design
            raise ValueError("incomplete compressed event state (its frame does not end)")
        return first, second

    def decompress(self, data: bytes) -> bytes:
        if data[:4] != MAGIC:
            return data
        dict_id = zstandard.get_frame_parameters(data).dict_id
        decompressed: bytes = self._decompressor(dict_id, magicless=False).decompress(data)
        return decompressed

    def _decompressor(self, dict_id: int, magicless: bool) -> zstandard.ZstdDecompressor:
        """This thread's decompressor for a dictionary (0: none); `magicless`: an envelope's."""
        cache: dict[tuple[int, bool], zstandard.ZstdDecompressor]
        cache = self._local.__dict__.setdefault("decompressors", {})
        if (dict_id, magicless) not in cache:
            dictionary = self._dictionaries.get(dict_id)
            if dictionary is None and (dict_id or magicless):
                shown = dict_id - DICT_ID_BASE if magicless else dict_id
                raise ValueError(f"event state compressed with unknown dictionary {shown}")
            form = zstandard.FORMAT_ZSTD1_MAGICLESS if magicless else zstandard.FORMAT_ZSTD1
            cache[dict_id, magicless] = zstandard.ZstdDecompressor(
                dict_data=dictionary, format=form
            )
        return cache[dict_id, magicless]


_shared: StateCompressor | None = None


def state_compressor() -> StateCompressor:
    """One per process: the dictionaries are loaded once."""
    global _shared
    if _shared is None:
        _shared = StateCompressor()
    return _shared


def inflate(state: bytes) -> bytes:
    """A stored event's state as JSON, compressed or not (for readers outside the mapper)."""
    if state[:4] != MAGIC:
        return state
    return state_compressor().decompress(state)
