"""Exceptions raised by candle_unet2d.

Every error is a :class:`UNet2DError`, and also the builtin exception it resembles, so that
``except ValueError`` / ``except FileNotFoundError`` written for diffusers keeps working:

=========================  ======================  ==================================================
class                      also a                  raised for
=========================  ======================  ==================================================
``ConfigError``            ``ValueError``          a bad ``config.json`` (unparsable, wrong type, out
                                                   of range, unknown block type)
``InvalidArgumentError``   ``ValueError``          a bad argument: sample shape/dtype, timestep, class
                                                   labels, dtype name, device name, variant
``WeightsError``           ``ValueError``          weights that do not fit the config (missing or
                                                   unused tensors, wrong shapes, malformed files)
``ModelNotFoundError``     ``FileNotFoundError``   a missing model folder, subfolder, config or
                                                   weights file; a Hub repository, revision or file
                                                   that does not exist (or is private), or is not
                                                   cached while offline
``DownloadError``          ``OSError``             a Hub download that failed: the Hub unreachable
                                                   (and not cached), a server that is not a Hub, an
                                                   HTTP error, a broken or corrupt transfer
``ReadError``              ``OSError``             a file that exists but cannot be read
``UnsupportedError``       ``RuntimeError``        a device this build cannot use (e.g. ``"cuda"`` in
                                                   a CPU-only build)
``TooLargeError``          ``MemoryError``         a valid request too large for memory (a huge batch
                                                   or image), refused before allocating; the limit is
                                                   the available memory, or
                                                   ``CANDLE_UNET2D_MEMORY_LIMIT``
``InternalError``          ``RuntimeError``        a bug in candle_unet2d (please report it)
=========================  ======================  ==================================================
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DownloadError",
    "InternalError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "ReadError",
    "TooLargeError",
    "UNet2DError",
    "UnsupportedError",
    "WeightsError",
]


class UNet2DError(Exception):
    """Base class of every error raised by candle_unet2d."""


class ConfigError(UNet2DError, ValueError):
    """The model's ``config.json`` cannot be parsed or holds an invalid value."""


class InvalidArgumentError(UNet2DError, ValueError):
    """An argument (sample, timestep, class labels, dtype, device, variant) is not acceptable."""


class WeightsError(UNet2DError, ValueError):
    """The weights are malformed or do not belong to the config."""


class ModelNotFoundError(UNet2DError, FileNotFoundError):
    """The model folder, a subfolder, ``config.json`` or the weights file does not exist."""


class ReadError(UNet2DError, OSError):
    """A file exists but could not be read."""


class DownloadError(UNet2DError, OSError):
    """A Hub download failed: the Hub could not be reached (and the cache cannot stand in), the
    server is not a Hugging Face Hub, an HTTP error, or a broken or corrupt transfer."""


class UnsupportedError(UNet2DError, RuntimeError):
    """The requested device cannot be used by this build."""


class TooLargeError(UNet2DError, MemoryError):
    """A valid request needs more memory than the limit: the available memory, or
    ``CANDLE_UNET2D_MEMORY_LIMIT`` (bytes, or e.g. ``"64G"``) when set. Refused before allocating."""


class InternalError(UNet2DError, RuntimeError):
    """A failure inside the computation, or a bug in candle_unet2d (please report it)."""


# Shown as candle_unet2d.X in tracebacks and reprs (the package re-exports them all).
for _cls in (
    UNet2DError,
    ConfigError,
    InvalidArgumentError,
    WeightsError,
    ModelNotFoundError,
    ReadError,
    DownloadError,
    UnsupportedError,
    TooLargeError,
    InternalError,
):
    _cls.__module__ = "candle_unet2d"
del _cls
