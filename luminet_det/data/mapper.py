"""detectron2's DatasetMapper with an error that names an unreadable image and the fix."""

from __future__ import annotations

from detectron2.data import DatasetMapper

__all__ = ["CheckedDatasetMapper"]


class CheckedDatasetMapper(DatasetMapper):
    """:class:`DatasetMapper` whose image-reading failures (a corrupt, truncated or non-image
    file: PIL raises OSError) and missing instance masks under MODEL.MASK_ON become a
    RuntimeError naming the file and the fix."""

    def __call__(self, dataset_dict):
        annotations = dataset_dict.get("annotations", [])
        if self.is_train and self.use_instance_mask and annotations:
            if any("segmentation" not in a for a in annotations):
                # detectron2 would silently give instances without gt_masks, and the mask
                # head would fail deep inside its loss
                raise RuntimeError(
                    f"{dataset_dict.get('file_name')!r} has annotations without 'segmentation' "
                    "(instance masks), which MODEL.MASK_ON needs. The built-in digits set has masks "
                    "since its version 3: regenerate it with `python datasets/prepare_digits.py` "
                    "(delete the old folder first); for your own data add COCO 'segmentation' "
                    "polygons or RLE (INPUT.MASK_FORMAT 'bitmask' for RLE)."
                )
        try:
            return super().__call__(dataset_dict)
        except OSError as e:
            raise RuntimeError(
                f"Could not read image {dataset_dict.get('file_name')!r}: {e}. The file is "
                "corrupt, truncated or not an image; re-extract it, or remove it from the "
                "annotation file."
            ) from e
