"""Perception statistics: batch, sync (2 processes), global (precomputed over the training set)
and running (accumulated in training); both checkpointed."""

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


def test_running_mode_uses_running_teacher_statistics_in_training_only():
    torch.manual_seed(2)
    loss = LuminetLoss(stats="running", num_classes=3)
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


def _sync_worker(rank, world, port, s_all, t_all, y_all, split, out):
    from luminet_det.losses import build_logit_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    rows = slice(0, split) if rank == 0 else slice(split, None)  # unequal row counts
    result = {}
    for name in ("luminet", "luminet_sigmoid"):
        s = s_all[rows].clone().requires_grad_(True)
        loss = build_logit_loss(name, stats="sync", temperature=2.0)(s, t_all[rows], y_all[rows])
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        result[name] = {"loss": total / world, "grad": s.grad}
    torch.save(result, os.path.join(out, f"sync{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("split", [5, 0])
def test_sync_mode_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path, split):
    """Unequal halves (5 and 11 rows; 0 and 16): the mean of the processes' losses and the mean
    of their gradients (what DistributedDataParallel applies) equal one process holding the
    concatenated batch, for the softmax and the sigmoid (foreground-normalised) forms."""
    from luminet_det.losses import sigmoid_luminet_loss

    torch.manual_seed(3)
    s_all, t_all = (
        torch.randn(16, 6, dtype=torch.float64),
        torch.randn(16, 6, dtype=torch.float64) * 3,
    )
    y_all = torch.tensor([0, 6, 6, 2, 6, 5, 6, 6, 1, 6, 6, 6, 3, 6, 6, 4])  # 6 = background
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_sync_worker, args=(2, port, s_all, t_all, y_all, split, str(tmp_path)), nprocs=2)
    got = [torch.load(tmp_path / f"sync{rank}.pt") for rank in (0, 1)]
    for name, fn in (
        ("luminet", lambda s: luminet_loss(s, t_all, 2.0)),
        ("luminet_sigmoid", lambda s: sigmoid_luminet_loss(s, t_all, y_all, 2.0)),
    ):
        ref_s = s_all.clone().requires_grad_(True)
        ref = fn(ref_s)
        ref.backward()
        for rank in (0, 1):
            assert got[rank][name]["loss"].item() == pytest.approx(ref.item(), rel=1e-10)
        # each process back-propagates its own loss; DistributedDataParallel then averages
        # over the 2 processes, so grad / 2 must equal the one-process gradient of its rows
        grads = torch.cat([got[0][name]["grad"], got[1][name]["grad"]]) / 2
        torch.testing.assert_close(grads, ref_s.grad)
    # and batch statistics would differ: the option changes something
    local = luminet_loss(s_all[:8], t_all[:8], 2.0)
    assert abs(local.item() - luminet_loss(s_all, t_all, 2.0).item()) > 1e-3


def test_running_mode_without_rows_contributes_zero_until_rows_arrive():
    """STATS running when the first batches have no rows (e.g. DENSE.ANCHORS foreground with
    no box in the batch): no error, a zero term with zero gradients, no statistics moved."""
    loss = LuminetLoss(stats="running", num_classes=3).train()
    empty = torch.zeros(0, 3, requires_grad=True)
    value = loss(empty, torch.zeros(0, 3))
    value.backward()
    assert value.item() == 0.0 and loss.running.count.item() == 0
    assert torch.equal(loss.running.mean, torch.zeros(3, dtype=torch.float64))
    # rows in the batch but nothing seen before (an eval-mode call): zero, with zero gradient
    s = torch.randn(6, 3, requires_grad=True)
    frozen = LuminetLoss(stats="running", num_classes=3).eval()
    value = frozen(s, torch.randn(6, 3))
    value.backward()
    assert value.item() == 0.0 and torch.count_nonzero(s.grad) == 0
    # the first rows: the loss with their own statistics
    t = torch.randn(6, 3) * 2
    expected = luminet_loss(s, t, 4.0, teacher_moments=batch_moments(t))
    assert loss(s, t).item() == pytest.approx(expected.item(), rel=1e-5)


def test_global_mode_applies_precomputed_statistics_unchanged():
    torch.manual_seed(4)
    loss = LuminetLoss(stats="global", num_classes=3, temperature=2.0)
    s, t = torch.randn(8, 3), torch.randn(8, 3) * 3 + 1
    with pytest.raises(RuntimeError, match="none were computed"):
        loss(s, t)
    chunks = [torch.randn(n, 3) * 2 - 1 for n in (6, 0, 9)]
    for c in chunks:
        loss.accumulate_teacher_stats(c)
    assert not loss.needs_teacher_stats
    mean, var = batch_moments(torch.cat(chunks))
    loss.train()
    for _ in range(2):  # training batches do not move them
        got = loss(s, t)
        expected = luminet_loss(s, t, 2.0, teacher_moments=(mean, var))
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.running.count.item() == 15
    with pytest.raises(AssertionError, match="not 'running'"):
        LuminetLoss(stats="running", num_classes=3).accumulate_teacher_stats(t)


def test_detector_prepass_gives_the_exact_moments_of_the_teachers_sampled_roi_logits(tmp_path):
    """STATS "global" before step 0: the teacher's logits on ROIs sampled as in training from
    its own proposals. With a ROI batch larger than the proposals every proposal (and ground
    truth box) is a row, so the expected moments can be computed directly."""
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.modeling import build_model
    from tiny import distill_cfg, save_teacher, tiny_cfg

    from luminet_det.data import generate_digits_detection, register_coco_detection
    from luminet_det.data.digits import digits_paths
    from luminet_det.engine import losses_needing_teacher_stats, precompute_teacher_stats
    from luminet_det.modeling.roi import box_logits

    generate_digits_detection(str(tmp_path / "d"), num_train=5, num_val=1, seed=3)
    name = f"prepass_{os.getpid()}"
    register_coco_detection(name, *digits_paths(str(tmp_path / "d"), "train"))

    def sized(cfg):
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 64
        cfg.INPUT.RANDOM_FLIP = "none"
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
        return cfg

    cfg = sized(distill_cfg(*save_teacher(tmp_path, sized(tiny_cfg(num_classes=10)))))
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 10
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # more than 20 proposals + ground truth
    cfg.MODEL.DISTILL.LUMINET.STATS = "global"
    cfg.MODEL.DISTILL.LUMINET.GLOBAL_STATS_IMAGES = 4
    cfg.DATASETS.TRAIN = (name,)
    cfg.SOLVER.IMS_PER_BATCH = 3  # batches of 3 and 1 images
    model = build_model(cfg)
    assert len(losses_needing_teacher_stats(model)) == 1
    rng = torch.get_rng_state()
    assert precompute_teacher_stats(cfg, model) == model.logit_losses["luminet"].running.count
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random draws are untouched
    assert losses_needing_teacher_stats(model) == []

    teacher, rows = model.teacher, []
    mapper = DatasetMapper(cfg, True)
    with torch.no_grad():
        for d in DatasetCatalog.get(name)[:4]:
            x = mapper(d)
            images = teacher.preprocess_image([x])
            features = teacher.backbone(images.tensor)
            proposals = teacher.proposal_generator(images, features, None)[0][0]
            boxes = proposals.proposal_boxes.tensor
            gt = x["instances"].gt_boxes.tensor
            rows.append(
                box_logits(
                    teacher, features, [type(proposals.proposal_boxes)(torch.cat([boxes, gt]))]
                )
            )
    expected_mean, expected_var = batch_moments(torch.cat(rows).double())
    running = model.logit_losses["luminet"].running
    assert running.count.item() == sum(len(r) for r in rows)
    torch.testing.assert_close(running.mean, expected_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(running.m2 / running.count, expected_var, rtol=1e-4, atol=1e-6)


def _chan_worker(rank, world, port, z_all, out):
    from luminet_det.losses import RunningMoments, sync_moments

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    z = z_all[rank::world]
    mean, var = sync_moments(z)
    running = RunningMoments(z.shape[1])
    running.update(z[:5])  # every process, different row counts per call
    running.update(z[5:])
    torch.save({"sync": (mean, var), "running": running()}, os.path.join(out, f"chan{rank}.pt"))
    dist.destroy_process_group()


def test_sync_variance_keeps_float32_precision_for_a_large_mean_small_spread_column(tmp_path):
    """A column with mean 30 and std 0.05 over 4096 rows: E[z^2]-E[z]^2 in float32 is about
    4 % off; merging per-process means and centred sums of squares is not."""
    import socket

    g = torch.Generator().manual_seed(5)
    z_all = torch.cat(
        [30 + 0.05 * torch.randn(4096, 1, generator=g), torch.randn(4096, 1, generator=g)], 1
    )
    two_pass_var = z_all.double().var(0, unbiased=False)
    naive = (z_all * z_all).mean(0) - z_all.mean(0) ** 2
    assert abs(naive[0].item() / two_pass_var[0].item() - 1) > 1e-2  # the old formula's error
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_chan_worker, args=(2, port, z_all, str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"chan{rank}.pt")
        mean, var = got["sync"]
        assert mean.dtype == torch.float32
        torch.testing.assert_close(var.double(), two_pass_var, rtol=1e-4, atol=0)
        torch.testing.assert_close(mean.double(), z_all.double().mean(0), rtol=1e-6, atol=0)
        torch.testing.assert_close(got["running"][1].double(), two_pass_var, rtol=1e-4, atol=0)


def test_detector_running_stats_are_saved_and_not_exported(tmp_path):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    from tiny import batch, distill_cfg, save_teacher

    from luminet_det.modeling import student_state_dict

    cfg = distill_cfg(*save_teacher(tmp_path), losses=["luminet"])
    cfg.MODEL.DISTILL.LUMINET.STATS = "running"
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
