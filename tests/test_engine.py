"""Atomic checkpoint writes: an interrupted save never leaves a file under the real name."""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from luminet_det.engine import make_atomic


def test_interrupted_save_leaves_previous_checkpoint_and_tag(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = make_atomic(DetectionCheckpointer(model, save_dir=str(tmp_path)))
    ckpt.save("model_0000009")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"partial bytes")  # half a checkpoint, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000019")
    monkeypatch.setattr(torch, "save", real_save)
    assert not (tmp_path / "model_0000019.pth").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert ckpt.get_checkpoint_file().endswith("model_0000009.pth")
    ckpt.save("model_0000029")  # and writing works again
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000029.pth"
    assert (
        torch.load(tmp_path / "model_0000029.pth", weights_only=False)["model"].keys()
        == model.state_dict().keys()
    )
