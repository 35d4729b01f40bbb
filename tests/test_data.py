"""The built-in digits set and the COCO-format loader: valid, deterministic, clear errors."""

import hashlib
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

from luminet_det.data import generate_digits_detection, read_coco_json, register_coco_detection
from luminet_det.data.coco import load_coco_detection
from luminet_det.data.digits import digits_paths


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            h.update(open(os.path.join(dirpath, name), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("digits"))
    generate_digits_detection(root, num_train=24, num_val=8, seed=3)
    return root


def test_generator_is_deterministic(small_set, tmp_path):
    other = str(tmp_path / "again")
    generate_digits_detection(other, num_train=24, num_val=8, seed=3)
    assert _digest(other) == _digest(small_set)
    different = str(tmp_path / "seed4")
    generate_digits_detection(different, num_train=24, num_val=8, seed=4)
    assert _digest(different) != _digest(small_set)


def test_generator_writes_valid_coco(small_set):
    for split, n in (("train", 24), ("val", 8)):
        json_file, image_dir = digits_paths(small_set, split)
        coco = COCO(json_file)
        assert len(coco.getImgIds()) == n
        assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == list("0123456789")
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.loadImgs(ann["image_id"])[0]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert 1 <= ann["category_id"] <= 10
            # the instance mask: the digit's own pixels, whose tight box is the annotation's
            mask = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            assert mask.shape == (img["height"], img["width"]) and 0 < mask.sum() < w * h
            assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == [
                x,
                y,
                w,
                h,
            ]
        for img in coco.loadImgs(coco.getImgIds()):
            assert os.path.isfile(os.path.join(image_dir, img["file_name"]))
            assert 1 <= len(coco.getAnnIds(imgIds=img["id"])) <= 5
    # every category is used in a set of reasonable size
    big = COCO(digits_paths(small_set, "train")[0])
    used = {a["category_id"] for a in big.loadAnns(big.getAnnIds())}
    assert len(used) >= 9  # 24 images x ~3 digits: at most one class may be missing by chance


def test_every_class_used_at_default_size(tmp_path):
    root = str(tmp_path / "d")
    generate_digits_detection(root, num_train=60, num_val=4, seed=0)
    data = json.load(open(digits_paths(root, "train")[0]))
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, 11))


def test_train_and_val_use_disjoint_digit_samples():
    # every fifth scikit-learn sample is reserved for validation (the split is by index)
    import numpy as np
    from sklearn.datasets import load_digits

    n = len(load_digits().images)
    val = np.arange(n) % 5 == 0
    assert 0.19 < val.mean() < 0.21


def _write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def test_corrupt_json_names_file_and_position(tmp_path):
    bad = _write(tmp_path / "bad.json", '{"images": [1, 2,, 3]}')
    with pytest.raises(
        ValueError, match=r"bad.json.*not valid JSON.*line 1, column 18 \(character 17\)"
    ):
        read_coco_json(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_coco_json(str(tmp_path / "none.json"))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        read_coco_json(_write(tmp_path / "x.json", {"images": [], "categories": []}))


def test_unknown_category_ids_are_reported(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 99,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    with pytest.raises(ValueError, match=r"category ids \[99\].*annotation id 7"):
        read_coco_json(_write(tmp_path / "c.json", data))


def test_bad_boxes_dropped_or_clipped_and_missing_images_reported(tmp_path, small_set, caplog):
    json_file, image_dir = digits_paths(small_set, "val")
    data = json.load(open(json_file))
    img = data["images"][0]
    base = dict(image_id=img["id"], category_id=1, iscrowd=0, area=1)
    data["annotations"] = [
        dict(base, id=1, bbox=[10, 10, 0, 5]),  # zero width: dropped
        dict(base, id=2, bbox=[10, 10, -3, 5]),  # negative: dropped
        dict(base, id=3, bbox=[500, 500, 5, 5]),  # outside: dropped
        dict(base, id=4, bbox=[120, 120, 20, 20]),  # partly outside: clipped
        dict(base, id=5, bbox=[5, 5, 10, 10]),  # fine
    ]
    path = _write(tmp_path / "boxes.json", data)
    with caplog.at_level("WARNING"):
        dicts = load_coco_detection(path, image_dir, "boxes_test")
    rec = next(d for d in dicts if d["image_id"] == img["id"])
    boxes = sorted(o["bbox"] for o in rec["annotations"])
    assert boxes == [[5, 5, 10, 10], [120, 120, 8, 8]]
    assert "dropped 3 boxes" in caplog.text and "clipped 1" in caplog.text
    # images without annotations are kept (detectron2 filters them from training)
    assert len(dicts) == 8
    data["images"].append({"id": 999, "file_name": "missing.png", "height": 128, "width": 128})
    path = _write(tmp_path / "missing.json", data)
    with pytest.raises(FileNotFoundError, match=r"1 of 9 images .* missing.*missing.png"):
        load_coco_detection(path, image_dir, "missing_test")


def test_register_coco_detection_sets_classes(small_set):
    json_file, image_dir = digits_paths(small_set, "val")
    classes = register_coco_detection("digits_reg_test", json_file, image_dir)
    assert classes == list("0123456789")
    assert MetadataCatalog.get("digits_reg_test").thing_classes == classes
    assert len(DatasetCatalog.get("digits_reg_test")) == 8
    with pytest.raises(ValueError, match="already registered"):
        register_coco_detection("digits_reg_test", json_file, image_dir)


def test_unreadable_image_error_names_the_file(small_set, tmp_path):
    import shutil

    from luminet_det import load_config
    from luminet_det.data import CheckedDatasetMapper

    json_file, image_dir = digits_paths(small_set, "val")
    broken_dir = tmp_path / "images"
    shutil.copytree(image_dir, broken_dir)
    first = sorted(os.listdir(broken_dir))[0]
    (broken_dir / first).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dicts = load_coco_detection(json_file, str(broken_dir), "broken_test")
    cfg = load_config(
        os.path.join(
            os.path.dirname(__file__), "..", "configs", "Digits-Detection", "student_R_18_FPN.yaml"
        )
    )
    mapper = CheckedDatasetMapper(cfg, True)
    record = next(d for d in dicts if d["file_name"].endswith(first))
    with pytest.raises(RuntimeError, match=rf"Could not read image .*{first}.*corrupt"):
        mapper(record)
    assert mapper(dicts[1])["image"].shape[0] == 3  # the others still load


def test_mask_configs_read_the_generated_masks_and_name_an_old_set_without_them(small_set):
    from luminet_det import load_config
    from luminet_det.data import CheckedDatasetMapper

    json_file, image_dir = digits_paths(small_set, "train")
    dicts = load_coco_detection(json_file, image_dir, "masks_test")
    cfg = load_config(
        os.path.join(
            os.path.dirname(__file__),
            "..",
            "configs",
            "Digits-Detection",
            "student_mask_R_18_FPN.yaml",
        )
    )
    mapper = CheckedDatasetMapper(cfg, True)
    inst = mapper(dicts[0])["instances"]
    assert inst.gt_masks.tensor.shape[0] == len(inst) and inst.gt_masks.tensor.any()
    old = dict(dicts[0], annotations=[
        {k: v for k, v in a.items() if k != "segmentation"} for a in dicts[0]["annotations"]
    ])  # fmt: skip
    with pytest.raises(RuntimeError, match="without 'segmentation'.*prepare_digits.py"):
        mapper(old)
