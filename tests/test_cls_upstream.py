"""luminet_det.cls's CIFAR networks are the upstream networks, and the released CIFAR-100
teachers load unchanged.

The fixture tests/fixtures/upstream_cifar.json holds what the public upstream code
(megvii-research/mdistiller, mdistiller/models/cifar/*.py, which trained the teachers of its
``cifar_teachers.tar``) computes: for all 16 architectures, the logits of the model filled by
:func:`fill` on :func:`probe`; and for the six released teachers' architectures, their state
dict's names and shapes. Its ``how`` field says how it was made. A change to any architecture
changes its logits and fails here.
"""

import json
import os

import pytest
import torch

from luminet_det.cls import build_model
from luminet_det.cls.models import MODELS

FIXTURE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "fixtures", "upstream_cifar.json"
)
UPSTREAM = json.load(open(FIXTURE))


def fill(state):
    """A deterministic value for every tensor of a state dict, by position and kind."""
    out = {}
    for i, (k, v) in enumerate(state.items()):
        g = torch.Generator().manual_seed(1000 + i)
        if k.endswith("num_batches_tracked"):
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean") or k.endswith("bias"):
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.dim() == 1:
            out[k] = 0.5 + 0.05 * torch.randn(v.shape, generator=g)
        else:
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=g) * (1.0 / fan_in) ** 0.5
    return out


def probe():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("arch", sorted(UPSTREAM["logits"]))
def test_every_cifar_architecture_computes_what_the_upstream_code_computes(arch):
    model = MODELS[arch](num_classes=100).eval()
    model.load_state_dict(fill(model.state_dict()))  # by position: the upstream order
    with torch.no_grad():
        logits = model(probe())[0]
    golden = torch.tensor(UPSTREAM["logits"][arch])
    torch.testing.assert_close(logits, golden, rtol=1e-4, atol=2e-6)


def _release_file(tmp_path, arch, state):
    """A checkpoint in the release's layout: <name>_vanilla/ckpt_epoch_240.pth with a dict
    {"model": state_dict, "epoch": ..., "accuracy": ...} (the upstream trainer's format)."""
    name = UPSTREAM["release_keys"][arch]["release_name"]
    folder = tmp_path / "cifar_teachers" / f"{name}_vanilla"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(79.42)}, path)
    return str(path)


@pytest.mark.parametrize("arch", sorted(UPSTREAM["release_keys"]))
def test_released_teachers_load_unchanged_and_give_the_same_logits(arch, tmp_path):
    upstream = UPSTREAM["release_keys"][arch]["state_dict"]
    # a release file: the upstream names and shapes, values from our model (so the logits
    # of the loaded model can be compared with the model the values came from)
    ours = MODELS[arch](num_classes=100).eval()
    ours.load_state_dict(fill(ours.state_dict()))
    values = list(ours.state_dict().values())
    assert [list(v.shape) for v in values] == [shape for _, shape in upstream]
    state = {name: v.clone() for (name, _), v in zip(upstream, values)}
    loaded = build_model(arch, 100, _release_file(tmp_path, arch, state)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe())[0], ours(probe())[0], rtol=0, atol=0)
    # and our own checkpoints keep loading
    own = tmp_path / "own.pth"
    torch.save({"model": ours.state_dict(), "arch": arch}, own)
    again = build_model(arch, 100, str(own)).eval()
    with torch.no_grad():
        assert torch.equal(again(probe())[0], ours(probe())[0])


def test_a_file_that_fits_neither_layout_is_refused_naming_the_keys(tmp_path):
    state = {k: v for k, v in MODELS["wrn_40_2"](num_classes=100).state_dict().items()}
    state.pop("fc.bias")
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=r"do not fit wrn_40_2: missing \['fc.bias'\]"):
        build_model("wrn_40_2", 100, str(path))
