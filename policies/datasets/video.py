"""MP4 video helpers on PyAV: encode frames, decode frames, and join/trim files by packet copy.

Frames at the edges are (T, H, W, 3) uint8 RGB. Frame ``i`` of a file written here is shown at
``i / fps`` seconds, which is how LeRobot locates episode frames inside a shard
(``from_timestamp + frame_index / fps``). Encoders use no B-frames, so packets are in display order
and a file can be cut after any frame without re-encoding.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from policies.datasets.atomic import atomic_path
from policies.datasets.layout import DatasetError, DatasetFileNotFoundError

logging.getLogger("libav").setLevel(logging.ERROR)


@functools.cache
def can_encode(codec: str) -> bool:
    """Tell whether PyAV's bundled FFmpeg has an encoder named ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class VideoEncoding:
    """How image features are encoded to mp4.

    ``codec="auto"`` picks libx264 (H.264, decodable by LeRobot's torchcodec and PyAV backends) when
    PyAV can encode it, else mpeg4. ``crf`` is the x264/SVT-AV1 quality (lower is better; 18 is
    visually lossless); mpeg4 uses a fixed high quantiser instead. ``gop`` is the keyframe interval
    (LeRobot uses 2 so random access decodes at most one extra frame).
    """

    codec: str = "auto"  # "auto", "libx264", "mpeg4", "libsvtav1", ...
    pix_fmt: str = "yuv420p"  # chroma-subsampled 8-bit, what every decoder handles
    crf: int = 18  # quality for libx264 / libsvtav1
    gop: int = 2  # frames between keyframes

    def __post_init__(self) -> None:
        if self.codec != "auto" and not can_encode(self.codec):
            raise ValueError(f"VideoEncoding.codec: PyAV cannot encode {self.codec!r}")
        if not 0 <= self.crf <= 63:
            raise ValueError(f"VideoEncoding.crf must be in [0, 63], got {self.crf}")
        if self.gop < 1:
            raise ValueError(f"VideoEncoding.gop must be >= 1, got {self.gop}")

    @property
    def encoder(self) -> str:
        """The FFmpeg encoder name that will be used."""
        if self.codec != "auto":
            return self.codec
        return "libx264" if can_encode("libx264") else "mpeg4"

    def options(self) -> dict[str, str]:
        """FFmpeg encoder options for :attr:`encoder` (no B-frames, keyframe every ``gop``)."""
        opts = {"g": str(self.gop), "bf": "0"}
        if self.encoder in ("libx264", "libx265", "libsvtav1"):
            opts["crf"] = str(self.crf)
        elif self.encoder == "mpeg4":
            opts.update(qmin="1", qmax="4")
        return opts


def _check_frames(frames: np.ndarray, pix_fmt: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {frames.dtype} {frames.shape}")
    if pix_fmt.startswith("yuv420") and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"pix_fmt {pix_fmt} needs even height and width, got {frames.shape[1]}x{frames.shape[2]}")
    return np.ascontiguousarray(frames)


def encode_frames(path: Path, frames: np.ndarray, fps: int, encoding: VideoEncoding) -> None:
    """Encode ``frames`` into a new mp4 at ``path`` (not atomic; see :func:`write_video`).

    Raises:
        ValueError: for frames that are not (T, H, W, 3) uint8, or odd sizes with yuv420p.
    """
    frames = _check_frames(frames, encoding.pix_fmt)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(encoding.encoder, rate=int(fps), options=encoding.options())
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = encoding.pix_fmt
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_video(
    path: str | Path, frames: np.ndarray, fps: int, encoding: VideoEncoding | None = None
) -> Path:
    """Write (T, H, W, 3) uint8 ``frames`` to an mp4 at ``path`` atomically and return the path.

    Raises:
        ValueError: for bad frames or ``fps`` <= 0.
    """
    if int(fps) <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    with atomic_path(path) as tmp:
        encode_frames(tmp, frames, fps, encoding or VideoEncoding())
    return path


def decode_video(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode every frame of the first video stream: ((T, H, W, 3) uint8 RGB, (T,) float64 times in s).

    Raises:
        DatasetFileNotFoundError: if ``path`` does not exist.
        DatasetError: if the file cannot be decoded or has no video frame; the message names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileNotFoundError(f"video file not found: {path}")
    images, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                images.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.pts * frame.time_base) if frame.pts is not None else np.nan)
    except (av.FFmpegError, IndexError, ValueError) as err:
        raise DatasetError(f"cannot decode video {path}: {err}") from err
    if not images:
        raise DatasetError(f"video {path} has no decodable frame")
    return np.stack(images), np.asarray(times, dtype=np.float64)


def read_video(path: str | Path) -> np.ndarray:
    """Decode an mp4 into (T, H, W, 3) uint8 RGB frames (errors as in :func:`decode_video`)."""
    return decode_video(path)[0]


def video_stream_info(path: str | Path) -> dict[str, object]:
    """Return LeRobot's ``features[key]["info"]`` entries (video.height, .width, .codec, ...) for a file.

    Raises:
        DatasetError: if the file cannot be opened or has no video stream.
    """
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return {
                "video.height": stream.height,
                "video.width": stream.width,
                "video.codec": stream.codec_context.codec.name,
                "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": int(stream.base_rate or stream.average_rate),
                "video.channels": 3,
                "has_audio": len(container.streams.audio) > 0,
            }
    except (av.FFmpegError, IndexError) as err:
        raise DatasetError(f"cannot read video stream of {path}: {err}") from err


def concat_videos(parts: list[tuple[Path, int | None]], out_path: Path, fps: int) -> int:
    """Join mp4 files by packet copy (no re-encoding) into ``out_path`` atomically; return its frame count.

    Each part is (path, max_frames): only the first ``max_frames`` frames of that file are kept
    (``None`` keeps all), which also trims frames a crashed writer appended. Frame ``k`` of the
    output is shown at ``k / fps`` s. All parts must share codec, size and pixel format.

    Raises:
        DatasetError: if a part cannot be read, has fewer than ``max_frames`` frames, or differs in
            codec/size from the first part; ``out_path`` is then left untouched.
    """
    with atomic_path(out_path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        out_stream, signature, total = None, None, 0
        for path, max_frames in parts:
            try:
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    sig = (stream.codec_context.name, stream.width, stream.height, stream.pix_fmt)
                    if out_stream is None:
                        out_stream, signature = out.add_stream_from_template(stream), sig
                    elif sig != signature:
                        raise DatasetError(f"cannot join {path}: stream {sig} differs from {signature}")
                    copied = _copy_packets(container, stream, out, out_stream, fps, total, max_frames)
                    if max_frames is not None and copied < max_frames:
                        raise DatasetError(f"{path} holds {copied} frames, {max_frames} expected")
                    total += copied
            except (av.FFmpegError, IndexError) as err:
                raise DatasetError(f"cannot read video {path} for joining: {err}") from err
    return total


def _copy_packets(container, stream, out, out_stream, fps: int, offset_frames: int, max_frames: int | None) -> int:
    """Mux ``stream``'s packets into ``out_stream`` shifted by ``offset_frames``; return frames copied."""
    shift = round(Fraction(offset_frames, fps) / stream.time_base)
    copied = 0
    for packet in container.demux(stream):
        if packet.pts is None:  # demuxer's end-of-stream marker
            continue
        frame_index = round(packet.pts * stream.time_base * fps)
        if max_frames is not None and frame_index >= max_frames:
            continue
        packet.pts += shift
        packet.dts = packet.dts + shift if packet.dts is not None else packet.pts
        packet.stream = out_stream
        out.mux(packet)
        copied += 1
    return copied


def count_frames(path: str | Path) -> int:
    """Count the video packets (frames) of ``path`` without decoding.

    Raises:
        DatasetError: if the file cannot be read.
    """
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.pts is not None)
    except (av.FFmpegError, IndexError) as err:
        raise DatasetError(f"cannot read video {path}: {err}") from err
