import torch
import torch.nn.functional as F

from spectral_ssl.losses import MoCoLoss


def reference_moco(q1, q2, k1, k2, queue, tau):
    def direction(q, k):
        total = 0.0
        for i in range(len(q)):
            logits = torch.cat([(q[i] @ k[i]).view(1), queue @ q[i]]) / tau
            total = total - torch.log_softmax(logits, 0)[0]
        return total / len(q)

    q1, q2, k1, k2 = (F.normalize(x, dim=1) for x in (q1, q2, k1, k2))
    return 0.5 * (direction(q1, k2) + direction(q2, k1))


def test_matches_reference_then_enqueues_both_views_keys_with_wraparound():
    torch.manual_seed(0)
    loss_fn = MoCoLoss(dim=4, queue_size=10, temperature=0.2)
    q1, q2, k1, k2 = (torch.randn(3, 4, dtype=torch.float64) for _ in range(4))
    queue = loss_fn.queue.clone().double()
    torch.testing.assert_close(loss_fn(q1, q2, targets=(k1, k2)).double(), reference_moco(q1, q2, k1, k2, queue, 0.2))
    keys = F.normalize(torch.cat([k1, k2]), dim=1).float()
    assert torch.allclose(loss_fn.queue[:6], keys) and int(loss_fn.queue_ptr) == 6
    loss_fn(q1, q2, targets=(k2, k1))  # 6 more keys: slots 6..9 then 0..1
    assert int(loss_fn.queue_ptr) == 2
    assert torch.allclose(loss_fn.queue[6:], F.normalize(torch.cat([k2, k1]), dim=1).float()[:4])
    assert torch.allclose(loss_fn.negatives()[:2], F.normalize(k1, dim=1).float()[1:3])


def test_eval_mode_does_not_touch_the_queue_and_no_targets_uses_detached_queries():
    loss_fn = MoCoLoss(dim=4, queue_size=8).eval()
    before = loss_fn.queue.clone()
    z1, z2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    loss_fn(z1, z2).backward()
    assert torch.equal(loss_fn.queue, before) and int(loss_fn.queue_ptr) == 0
    expected = reference_moco(z1.detach(), z2.detach(), z1.detach(), z2.detach(), before, 0.2)
    torch.testing.assert_close(loss_fn(z1, z2), expected)


def test_without_targets_the_gradient_reaches_the_queries_only():
    torch.manual_seed(1)
    loss_fn = MoCoLoss(dim=4, queue_size=8).eval()
    queue = loss_fn.queue.clone().double()
    z1, z2 = (torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    loss_fn(z1, z2).backward()
    r1, r2 = (z.detach().clone().requires_grad_(True) for z in (z1, z2))
    reference_moco(r1, r2, r1.detach(), r2.detach(), queue, 0.2).backward()
    torch.testing.assert_close(z1.grad, r1.grad)
    torch.testing.assert_close(z2.grad, r2.grad)


def test_more_keys_than_the_queue_keep_the_newest():
    # 2B = 8 keys into a queue of 3: the ring buffer ends holding the last 3 keys (those of view 2's last rows)
    torch.manual_seed(2)
    loss_fn = MoCoLoss(dim=4, queue_size=3)
    q1, q2, k1, k2 = (torch.randn(4, 4) for _ in range(4))
    loss_fn(q1, q2, targets=(k1, k2))
    newest = F.normalize(k2, dim=1)[1:]
    stored = sorted(loss_fn.queue.tolist())
    torch.testing.assert_close(torch.tensor(stored), torch.tensor(sorted(newest.tolist())))
