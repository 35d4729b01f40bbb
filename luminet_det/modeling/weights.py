"""Checkpoint files named in a config: on disk, or downloaded once (detectron2's PathManager),
with an error that says how to provide them by hand when the download fails."""

from __future__ import annotations

import os

from detectron2.utils.file_io import PathManager

from ..errors import WeightsUnavailableError

__all__ = ["local_weights"]


def local_weights(weights: str, key: str, hint: str = "") -> str:
    """The local path of ``weights`` (a path, a URL or ``detectron2://...``), downloading a URL
    into the cache of detectron2's PathManager the first time.

    Args:
        weights (str): what the config says.
        key (str): the config key it came from, for the message (e.g. "MODEL.WEIGHTS").
        hint (str): how to make a missing local file, appended to the message.

    Raises:
        WeightsUnavailableError: a local file that does not exist, or a URL that could not be
            downloaded (with the URL, the error, where to place the file and which key to set).
    """
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(
                f"{key} {weights!r} does not exist; give the path of the checkpoint. {hint}".strip()
            )
        return weights
    try:
        return PathManager.get_local_path(weights)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        name = os.path.basename(weights.split("?")[0]) or "weights.pkl"
        raise WeightsUnavailableError(
            f"Could not download {weights} ({key}): {type(e).__name__}: {e}. On a machine with "
            f"internet access, download that URL, place the file here (e.g. at "
            f"checkpoints/{name}) and set {key} checkpoints/{name}."
        ) from None
