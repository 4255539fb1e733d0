"""Attacks by a learner's code: the export, indexed writes, a cell's feedback, cmp labels, and Exercise 4 blocks
that the compiled form once ran otherwise than the interpreter. Each takes a started server (attack_kit.Server)
and returns {measure: value}; bench/attack_bench.py runs them beside the other attacks."""

from __future__ import annotations

import time

import httpx
from attack_kit import Server


def _post(server: Server, path: str, body: dict, timeout: float = 120) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    r = httpx.post(f"{server.url}{path}", json=body, timeout=timeout)
    return r, time.perf_counter() - t0


def _answered(r: httpx.Response, took: float) -> dict[str, object]:
    """A check's answer as a row: status, bytes, seconds and the start of its reason."""
    return {"status": r.status_code, "bytes": len(r.content), "s": round(took, 3),
            "detail": str(r.json().get("detail", ""))[:60]}  # fmt: skip


def export_of_refused_code(server: Server) -> dict[str, object]:
    """Point 1: a cell that rebinds range (the lecture's name) to a builtin; a check refuses it, the export must too."""
    code = "range = chr\nx = range(111) + range(115)\ndlogits = F.softmax(logits, 1)"
    checked, _ = _post(server, "/api/check", {"mode": "fused", "code": code})
    exported, took = _post(server, "/api/export", {"mode": "fused", "code": code, "format": "py"})
    detail = exported.json().get("detail") if exported.status_code != 200 else None
    return {
        "export status": exported.status_code,
        "bytes": len(exported.content),
        "s": round(took, 3),
        "check status": checked.status_code,
        "same reason": detail is not None and detail == checked.json().get("detail"),
        "file runs range(...)": exported.status_code == 200 and b"range = chr" in exported.content,
    }


def broadcast_index_write(server: Server) -> dict[str, object]:
    """Point 2: z[i, j] = c with i (N,1) and j (1,N), N = 30,720: 9.4e8 index pairs, each index tensor within the
    size cap; the old dry run counted the assigned number only. A victim's trivial check runs beside it."""
    code = (
        "a = (Yb.view(-1, 1) * 0 + Xb.view(1, -1) * 0).view(-1)\n"  # 3,072 zeros
        "b = (a.view(-1, 1) * 0 + a[0:10].view(1, -1) * 0).view(-1)\n"  # 30,720 zeros
        "z = torch.zeros_like(logprobs)\n"
        "z[b.view(-1, 1), b.view(1, -1)] = 1.0\n"
        "dlogprobs = z * 0"
    )
    trivial = {"step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"}
    _post(server, "/api/check", trivial)  # warm
    r, took = _post(server, "/api/check", {"step": 1, "code": code}, timeout=300)
    _, victim = _post(server, "/api/check", trivial)
    return {**_answered(r, took), "next check s": round(victim, 3)}


def cell_feedback_reruns(server: Server) -> dict[str, object]:
    """Point 3: a 2,000-iteration loop, then a wrong line with four reductions over a dim (twelve variants, none
    right): the old feedback reran the whole cell, loop included, for each; the right cell is the baseline."""
    loop = "for k in range(2000):\n  t = (logits[0, 0], logits[0, 1], logits[0, 2], logits[0, 3], logits[0, 4])\n"
    right = loop + "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, 27)) / n"
    wrong = loop + (
        "dlogits = F.softmax(logits, 0) + logits.sum(0, keepdim=True) * 0 + logits.sum(1, keepdim=True) * 0 "
        "+ logits.max(0, keepdim=True).values * 0"
    )
    _post(server, "/api/check", {"mode": "fused_ce", "code": right})  # warm: the pass is cached
    r_right, t_right = _post(server, "/api/check", {"mode": "fused_ce", "code": right})
    r_wrong, t_wrong = _post(server, "/api/check", {"mode": "fused_ce", "code": wrong})
    return {
        "status": r_wrong.status_code,
        "bytes": len(r_wrong.content),
        "s": round(t_wrong, 3),
        "right cell s": round(t_right, 3),
        "x the check": round(t_wrong / t_right, 1),
    }


def surrogate_cmp_label(server: Server) -> dict[str, object]:
    """Point 9 (part): cmp('\\ud800', ...) is ASCII as sent and a lone surrogate as read; the old worker failed on the
    answer's JSON and let its pass cache go, so the next check rebuilt its pass."""
    normal = {"mode": "fused", "code": "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, 27)) / n"}
    _post(server, "/api/check", normal)  # warm: the pass is cached
    _, cached = _post(server, "/api/check", normal)
    code = "dlogits = logits * 0\ncmp('\\ud800', dlogits, logits)"  # the label: a backslash escape, in ASCII
    r, took = _post(server, "/api/check", {"mode": "fused", "code": code})
    _, after = _post(server, "/api/check", normal)
    return {**_answered(r, took), "next check s": round(after, 3), "cached check s": round(cached, 3)}


# the notebook's Exercise 4 block as a run trains it (backward=code)
BLOCK = """\
dlogits = F.softmax(logits, 1)
dlogits[range(n), Yb] -= 1
dlogits /= n
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)
dhpreact = (1.0 - h**2) * dh
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C)
for k in range(Xb.shape[0]):
  for j in range(Xb.shape[1]):
    ix = Xb[k,j]
    dC[ix] += demb[k,j]
grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]
"""
LAST = "grads = ["
DC_LOOP = BLOCK[BLOCK.index("for k in range(Xb.shape[0])") : BLOCK.index(LAST)]


def _train(server: Server, code: str, steps: int = 2000) -> dict[str, object]:
    """POST a backward=code run of `code`, wait (at most 120 s) for it to end; the answer and the run's end."""
    body = {"backward": "code", "code": code, "max_steps": steps, "lr_decay_step": steps // 2}
    t0 = time.perf_counter()
    r = httpx.post(f"{server.url}/api/runs", json=body, timeout=120)
    row: dict[str, object] = {"POST": r.status_code, "bytes": len(r.content), "s": round(time.perf_counter() - t0, 2)}
    if r.status_code != 201:
        row["reason"] = str(r.json().get("detail", ""))[:90]
        return row
    (run,) = r.json()["runs"]
    url = f"{server.url}/api/runs/{run['id']}"
    for _ in range(600):  # bounded: 120 s
        run = httpx.get(url, timeout=30).json()
        if run["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    else:
        httpx.post(f"{url}/cancel", timeout=30)
    result = run.get("result") or {}
    row.update(
        run=run["status"], reason=(run.get("reason") or "")[:90], train_loss=result.get("train_loss"),
        took_s=round(time.perf_counter() - t0, 1),
    )  # fmt: skip
    return row


def compiled_plus_x(server: Server) -> dict[str, object]:
    """(+W1) * 0.0: before, compiled into W1.mul_(0.0) and trained a zeroed net (loss near ln 27 = 3.30);
    after, a new tensor as the interpreter makes: the run trains as the notebook's block does (loss ~2.4)."""
    return _train(server, BLOCK.replace(LAST, "junk = (+W1) * 0.0\n" + LAST))


def compiled_plus_xb(server: Server) -> dict[str, object]:
    """(+Xb) * 0: before, compiled into Xb.mul_(0) on the first batch of the training split that the sandbox process
    caches for later checks (not visible through the API: tests/test_train_code.py reads the split); after, a new
    tensor, as the interpreter makes. Row: the run's answer and end."""
    return _train(server, BLOCK.replace(LAST, "junk = (+Xb) * 0\n" + LAST), steps=1000)


def compiled_layout(server: Server) -> dict[str, object]:
    """dh = (W2 @ dlogits.T).T, then dh * (1.0 - h**2), right code: before, refused as 'dC: the compiled block
    differs ... (a bug of this server)'; after, accepted and trained."""
    block = BLOCK.replace("dh = dlogits @ W2.T", "dh = (W2 @ dlogits.T).T")
    return _train(server, block.replace("dhpreact = (1.0 - h**2) * dh", "dhpreact = dh * (1.0 - h**2)"))


def compiled_negative_entries(server: Server) -> dict[str, object]:
    """The dC loop over X = Xb - 27 (characters counted from the end, as Python indexes): before, the fused
    index_add_ refused -27..-1 ('RuntimeError: index -24 is out of bounds', a 4xx or a failed run); after, trained."""
    loop = DC_LOOP.replace("ix = Xb[k,j]", "ix = X[k,j]")
    return _train(server, BLOCK.replace(DC_LOOP, "X = Xb - 27\n" + loop))


def compiled_ix_after_loop(server: Server) -> dict[str, object]:
    """ix += 0 after the dC loop (over a copy of Xb): before, "KeyError: 'ix'"; after, trained."""
    loop = DC_LOOP.replace("ix = Xb[k,j]", "ix = X[k,j]")
    return _train(server, BLOCK.replace(DC_LOOP, "X = Xb.clone()\n" + loop + "ix += 0\n"))


def compiled_overlapping_rows(server: Server) -> dict[str, object]:
    """A scatter loop whose rows are the table's own (and one whose table has one row of memory): before, the
    fused index_add_ raised 'unsupported operation: ... single memory location'; after, the loop runs as written."""
    extra = (
        "T = demb.clone().view(-1, 10)\nV = T.view(emb.shape)\n"
        "for k in range(n):\n  for j in range(3):\n    ix = Xb[k,j]\n    T[ix] += V[k,j]\n"
    )
    return _train(server, BLOCK.replace(LAST, extra + LAST))


def compiled_data_loop_count(server: Server) -> dict[str, object]:
    """The dC loop's count read out of the data (all 32 rows on the check batch, 5 on most others): before, the
    fused plan of the check batch was reused and dC was wrong on every other step; after, refused by the checks or
    run through the interpreter at every step (the same dC as the interpreter's)."""
    counts = "(" + ", ".join("32" if i % 2 else "5" for i in range(27)) + ")"  # as Yb[0] is odd or even
    first = "for k in range(Xb.shape[0]):"
    return _train(server, BLOCK.replace(first, f"m = {counts}[Yb[0]]\nfor k in range(m):"))


def compiled_unreached_write(server: Server) -> dict[str, object]:
    """W1 *= 0.0 in a loop the check batch does not run (its count 0 where Yb[0] is the check's): before, run on
    later steps and W1 zeroed; after, refused, or the step that reaches it fails with 'W1 is shared'."""
    once = "(" + ", ".join("1" if i % 2 else "0" for i in range(27)) + ")"  # 0 where Yb[0] is even
    return _train(server, BLOCK.replace(LAST, f"for q in range({once}[Yb[0]]):\n  W1 *= 0.0\n" + LAST))


def compiled_later_index_error(server: Server) -> dict[str, object]:
    """dC[ix * 2]: fine while every entry is below 14, past dC's 27 rows on a later batch: before, a raw
    'IndexError: index 40 ...' (or a traceback from the check); after, 'line 19 (k = 5, j = 1): index 40 ...'."""
    return _train(server, BLOCK.replace("dC[ix] += demb[k,j]", "dC[ix * 2] += demb[k,j]"))


def compiled_expand_as_minus(server: Server) -> dict[str, object]:
    """e = x[0:1].expand_as(logits); e[range(n), Yb] -= 1: before, subtracted once per pair (compiled) where the
    interpreter subtracts once per place, silently; after, as the interpreter. Row: the run (it trains either way)."""
    extra = "e = logits[0:1].clone().expand_as(logits)\ne[range(n), Yb] -= 1\n"
    return _train(server, BLOCK.replace(LAST, extra + LAST))
