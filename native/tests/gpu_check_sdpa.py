#!/usr/bin/env python3
"""Times PyTorch's scaled_dot_product_attention on fp32 CUDA tensors for the shapes that
gla_cuda_bench measured, and prints one comparison table (part of native/tests/gpu-check.sh).

    python3 gpu_check_sdpa.py RESULTS_FILE

RESULTS_FILE holds gla_cuda_bench's "RESULT key=value ..." lines. TF32 is off, so both sides do
fp32 arithmetic. Causal uses is_causal (both sides have seq == kv there, where top-left and
bottom-right alignment agree). Local-global uses an explicit boolean mask, only where the
[seq, kv] mask fits the limit below; elsewhere SDPA is reported as n/a. Decode uses enable_gqa.
"SDPA total" adds the host->device copies of q, k, v and the copy of out back, as the plugin's
total does. Exits non-zero only on an error, not on a missed target (the targets are printed).
"""
import statistics
import sys
import time

MASK_LIMIT = 16384 * 16384  # elements of the boolean local-global mask SDPA is given at most


def parse(path):
    cases = []
    with open(path) as f:
        for line in f:
            if not line.startswith("RESULT "):
                continue
            fields = dict(kv.split("=", 1) for kv in line.split()[1:])
            for key in ("batch", "heads", "kv_heads", "seq", "kv", "dim", "causal", "window_left",
                        "window_right", "globals"):
                fields[key] = int(fields[key])
            for key in ("kernel_ms", "copy_in_ms", "copy_out_ms", "total_ms", "tflops", "rel_err"):
                fields[key] = float(fields[key])
            cases.append(fields)
    if not cases:
        raise SystemExit(f"no RESULT lines in {path}")
    return cases


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: gpu_check_sdpa.py RESULTS_FILE")
    cases = parse(sys.argv[1])

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}; allow_tf32 = False")

    def gpu_ms(fn, warmup=2, reps=5):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def wall_ms(fn, warmup=1, reps=3):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    rows = []
    for c in cases:
        b, h, kvh, s, kv, d = c["batch"], c["heads"], c["kv_heads"], c["seq"], c["kv"], c["dim"]
        gen = torch.Generator(device="cpu").manual_seed(0)
        q_cpu = torch.rand(b, h, s, d, generator=gen) * 2 - 1
        k_cpu = torch.rand(b, kvh, kv, d, generator=gen) * 2 - 1
        v_cpu = torch.rand(b, kvh, kv, d, generator=gen) * 2 - 1
        q, k, v = q_cpu.to(dev), k_cpu.to(dev), v_cpu.to(dev)
        kwargs = {}
        if kvh != h:
            kwargs["enable_gqa"] = True
        if c["causal"]:
            kwargs["is_causal"] = True
        local = c["window_left"] >= 0 or c["window_right"] >= 0 or c["globals"] > 0
        note = ""
        sdpa_ms = sdpa_total = None
        mask = None
        if local:
            if s * kv <= MASK_LIMIT:
                i = torch.arange(s, device=dev, dtype=torch.int32)[:, None] + (kv - s)
                j = torch.arange(kv, device=dev, dtype=torch.int32)[None, :]
                allowed = torch.ones(s, kv, dtype=torch.bool, device=dev)
                if c["window_left"] >= 0:
                    allowed &= j >= i - c["window_left"]
                if c["window_right"] >= 0:
                    allowed &= j <= i + c["window_right"]
                del i, j
                g = torch.tensor([kv * n // c["globals"] for n in range(c["globals"])], device=dev,
                                 dtype=torch.long)
                if c["globals"] > 0:
                    allowed[:, g] = True
                    rows_g = g - (kv - s)
                    rows_g = rows_g[(rows_g >= 0) & (rows_g < s)]
                    allowed[rows_g, :] = True
                mask = allowed
                kwargs["attn_mask"] = mask
            else:
                note = "mask too large"
        if not local or mask is not None:
            try:
                sdpa_ms = gpu_ms(lambda: F.scaled_dot_product_attention(q, k, v, **kwargs))

                def with_copies():
                    qq, kk, vv = q_cpu.to(dev), k_cpu.to(dev), v_cpu.to(dev)
                    return F.scaled_dot_product_attention(qq, kk, vv, **kwargs).cpu()

                sdpa_total = wall_ms(with_copies)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # report, keep going
                note = f"SDPA failed: {str(e).splitlines()[0][:60]}"
                sdpa_ms = sdpa_total = None
        del q, k, v, mask
        kwargs.clear()
        torch.cuda.empty_cache()
        rows.append((c, sdpa_ms, sdpa_total, note))

    def fmt(x, width=10, digits=3):
        return f"{x:{width}.{digits}f}" if x is not None else f"{'n/a':>{width}}"

    print()
    print(f"{'case':<18} {'seq':>6} {'ours kern':>10} {'ours copy':>10} {'ours total':>10} "
          f"{'SDPA kern':>10} {'SDPA total':>10} {'kern ratio':>10}  note")
    for c, sdpa_ms, sdpa_total, note in rows:
        ratio = sdpa_ms / c["kernel_ms"] if sdpa_ms and c["kernel_ms"] > 0 else None
        copy = c["copy_in_ms"] + c["copy_out_ms"]
        print(f"{c['name']:<18} {c['seq']:>6} {fmt(c['kernel_ms'])} {fmt(copy)} {fmt(c['total_ms'])} "
              f"{fmt(sdpa_ms)} {fmt(sdpa_total)} {fmt(ratio, 10, 2)}  {note}")
    print("kern ratio = SDPA kernel time / our kernel time (> 1: ours is faster).")

    print()
    full = [r for r in rows if r[0]["name"] == "full"]
    if full and full[0][1] is not None:
        c, sdpa_ms = full[0][0], full[0][1]
        verdict = "MET" if c["kernel_ms"] <= sdpa_ms else "NOT MET"
        print(f"target: full attention fp32 at least as fast as SDPA fp32: {verdict} "
              f"(ours {c['kernel_ms']:.3f} ms, SDPA {sdpa_ms:.3f} ms)")
    local = sorted((r[0] for r in rows if r[0]["name"].startswith("local-global")), key=lambda c: c["seq"])
    if len(local) >= 2:
        per_token = [c["kernel_ms"] / c["seq"] * 1e3 for c in local]
        spread = max(per_token) / min(per_token)
        verdict = "MET" if spread <= 1.3 else "NOT MET"
        detail = ", ".join(f"{c['seq']}: {p:.4f} ms per 1k tokens" for c, p in zip(local, per_token))
        print(f"target: local-global time linear in seqLen (per-token time within 1.3x): {verdict} ({detail})")
    bad = [c["name"] for c in cases if not c["rel_err"] <= 1e-5]
    print("correctness (sampled rows vs double):", "all within 1e-5" if not bad else f"WRONG: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
