"""detectron2's DatasetMapper with an error that names an unreadable image and the fix."""

from __future__ import annotations

from detectron2.data import DatasetMapper

__all__ = ["CheckedDatasetMapper"]


class CheckedDatasetMapper(DatasetMapper):
    """:class:`DatasetMapper` whose image-reading failures (a corrupt, truncated or non-image
    file: PIL raises OSError) become a RuntimeError naming the file and the fix."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except OSError as e:
            raise RuntimeError(
                f"Could not read image {dataset_dict.get('file_name')!r}: {e}. The file is "
                "corrupt, truncated or not an image; re-extract it, or remove it from the "
                "annotation file."
            ) from e
