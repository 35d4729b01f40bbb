"""Perception statistics: batch, sync (2 processes) and global (running, checkpointed)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from luminet_det.losses import LuminetLoss, RunningMoments, batch_moments, luminet_loss, perception


def test_batch_mode_equals_luminet_loss_and_given_moments_are_used():
    torch.manual_seed(0)
    s, t = torch.randn(12, 5), torch.randn(12, 5) * 2
    assert LuminetLoss(stats="batch", temperature=2.0)(s, t).item() == pytest.approx(
        luminet_loss(s, t, 2.0).item()
    )
    # one process: sync == batch
    assert LuminetLoss(stats="sync", temperature=2.0)(s, t).item() == pytest.approx(
        luminet_loss(s, t, 2.0).item()
    )
    mean, var = torch.zeros(5), torch.ones(5) * 4
    by_hand = (
        torch.nn.functional.kl_div(
            torch.log_softmax(perception(s) / 2.0, 1),
            torch.log_softmax(t / torch.sqrt(torch.tensor(4.0 + 1e-5)) / 2.0, 1),
            reduction="none",
            log_target=True,
        )
        .sum(1)
        .mean()
    )
    got = luminet_loss(s, t, 2.0, teacher_moments=(mean, var))
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_running_moments_are_exact_and_checkpointed():
    torch.manual_seed(1)
    chunks = [torch.randn(n, 4) * 3 + 1 for n in (5, 17, 1, 9)]
    rm = RunningMoments(4)
    for c in chunks:
        rm.update(c)
    mean, var = batch_moments(torch.cat(chunks))
    got_mean, got_var = rm()
    torch.testing.assert_close(got_mean, mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_var, var, atol=1e-5, rtol=1e-5)
    restored = RunningMoments(4)
    restored.load_state_dict(rm.state_dict())
    torch.testing.assert_close(restored()[1], got_var)
    with pytest.raises(RuntimeError, match="no rows"):
        RunningMoments(4)()


def test_global_mode_uses_running_teacher_statistics_in_training_only():
    torch.manual_seed(2)
    loss = LuminetLoss(stats="global", num_classes=3)
    t1, t2 = torch.randn(8, 3), torch.randn(8, 3) + 5
    s = torch.randn(8, 3)
    loss.train()
    loss(s, t1)
    value = loss(s, t2)
    mean, var = batch_moments(torch.cat([t1, t2]))
    expected = luminet_loss(s, t2, 4.0, teacher_moments=(mean, var))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    count = loss.running.count.item()
    loss.eval()
    loss(s, t1)
    assert loss.running.count.item() == count
    with pytest.raises(ValueError, match="STATS must be one of"):
        LuminetLoss(stats="local")


def _sync_worker(rank, world, port, s_all, t_all, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = s_all.shape[0] // world
    s = s_all[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    t = t_all[rank * n : (rank + 1) * n]
    loss = LuminetLoss(stats="sync", temperature=2.0)(s, t)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    torch.save({"loss": total / world, "grad": s.grad}, os.path.join(out, f"sync{rank}.pt"))
    dist.destroy_process_group()


def test_sync_mode_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    torch.manual_seed(3)
    s_all, t_all = (
        torch.randn(16, 6, dtype=torch.float64),
        torch.randn(16, 6, dtype=torch.float64) * 3,
    )
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_sync_worker, args=(2, port, s_all, t_all, str(tmp_path)), nprocs=2)
    ref_s = s_all.clone().requires_grad_(True)
    ref = luminet_loss(ref_s, t_all, 2.0)
    ref.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"sync{rank}.pt")
        assert got["loss"].item() == pytest.approx(ref.item(), rel=1e-10)
        # each process back-propagates its own mean loss; DistributedDataParallel then averages
        # over the 2 processes, so grad / 2 must equal the one-process gradient of its rows
        torch.testing.assert_close(got["grad"] / 2, ref_s.grad[rank * 8 : (rank + 1) * 8])
    # and batch statistics would differ: the option changes something
    local = luminet_loss(s_all[:8], t_all[:8], 2.0)
    assert abs(local.item() - ref.item()) > 1e-3


def test_detector_global_stats_are_saved_and_not_exported(tmp_path):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    from tiny import batch, distill_cfg, save_teacher

    from luminet_det.modeling import student_state_dict

    cfg = distill_cfg(*save_teacher(tmp_path), losses=["luminet"])
    cfg.MODEL.DISTILL.LUMINET.STATS = "global"
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        model(batch())
    state = model.state_dict()
    assert state["logit_losses.luminet.running.count"].item() == 64  # 2 images x 32 ROIs
    assert not any(k.startswith("logit_losses.") for k in student_state_dict(state))
    other = build_model(cfg)
    other.load_state_dict(state)
    assert other.logit_losses["luminet"].running.count.item() == 64


def test_checkpoints_that_predate_the_logit_losses_name_still_load(tmp_path):
    """Version 0.1 saved LumiNet's running statistics under "logit_loss_modules."."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from tiny import distill_cfg, save_teacher

    from luminet_det.modeling import student_state_dict

    cfg = distill_cfg(*save_teacher(tmp_path), losses=["luminet"])
    cfg.MODEL.DISTILL.LUMINET.STATS = "global"
    model = build_model(cfg)
    old = {
        k.replace("logit_losses.", "logit_loss_modules."): v.clone()
        for k, v in model.state_dict().items()
    }
    old["logit_loss_modules.luminet.running.count"].fill_(7.0)
    old["logit_loss_modules.luminet.running.mean"].fill_(0.5)
    torch.save({"model": old}, tmp_path / "old.pth")
    other = build_model(cfg)
    DetectionCheckpointer(other).load(str(tmp_path / "old.pth"))
    assert other.logit_losses["luminet"].running.count.item() == 7.0
    assert torch.all(other.logit_losses["luminet"].running.mean == 0.5)
    # and exporting such a checkpoint keeps only the student
    assert not any(k.startswith("logit_loss") for k in student_state_dict(old))
