"""Time one optimization step, split into render / encode / UNet (method.gradient) / backward+Adam.

    python benchmarks/step_time.py                         # tiny random prior, CPU, 32/64/128 px
    python benchmarks/step_time.py --prior builtin          # the built-in toy-world prior
    python benchmarks/step_time.py --prior sd21-random --device cuda --dtype bf16   # SD 2.1-base architecture,
                                                            # random weights from its config (no download)
    python benchmarks/step_time.py --methods all --resolutions 64 128 256 ...       # every method, one prior load

Prints one row per resolution: milliseconds per phase (median over --repeat steps after --warmup) and, on CUDA, the
peak GPU memory. Compare rows of one run with each other; these machines are noisy across runs.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
import torch.nn.functional as F


def load(prior_name: str, device: str, dtype: torch.dtype):
    if prior_name == "sd21-random":
        from dreamstill.backend.priors.tiny import build_random_prior

        return build_random_prior("sd21-base", with_vae=True, device=device, dtype=dtype)
    from dreamstill.backend.priors import load_prior

    return load_prior(prior_name, device=device, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="tiny")
    parser.add_argument("--methods", nargs="+", default=["sds"], help="method names, or 'all'")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from dreamstill.backend.distill import METHODS

    methods = list(METHODS) if args.methods == ["all"] else args.methods
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(METHODS)} or 'all'")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    prior = load(args.prior, args.device, dtype)
    for method in methods:
        time_method(method, prior, args)
        gc.collect()
        if str(args.device).startswith("cuda"):
            torch.cuda.empty_cache()


def time_method(method: str, prior, args) -> None:
    """Print one row per resolution: the median milliseconds of each phase of one step of ``method``."""
    from dreamstill.backend.distill.base import DistillInput, surrogate_loss
    from dreamstill.backend.engine import AssetOptimizer
    from dreamstill.backend.render import render
    from dreamstill.backend.render.cameras import sample_cameras
    from dreamstill.protocol import JobSpec

    cuda = str(args.device).startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    print(
        f"prior={args.prior} method={method} device={args.device} dtype={args.dtype} "
        f"views/step={args.batch_size} threads={torch.get_num_threads()}"
    )
    print(f"{'res':>5} {'render':>9} {'encode':>9} {'unet':>9} {'backward':>9} {'total ms':>9} {'peak GiB':>9}")
    for res in args.resolutions:
        spec = JobSpec(
            prompt="a red cube",
            prior=args.prior,
            method=method,
            steps=1000,
            resolution=res,
            batch_size=args.batch_size,
        )
        opt = AssetOptimizer(spec, prior=prior)
        times: dict[str, list[float]] = {k: [] for k in ("render", "encode", "unet", "backward")}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.repeat):
            cams = sample_cameras(args.batch_size, opt.camera_rng).to(opt.device)
            sync()
            t0 = time.perf_counter()
            out = render(
                opt.field,
                cams,
                res,
                res,
                opt.background,
                shading="lambertian",
                num_samples=opt.defaults.num_samples,
                rng=opt.noise_rng,
            )
            sync()
            t1 = time.perf_counter()
            z = prior.encode_images(out.rgb.permute(0, 3, 1, 2))
            sync()
            t2 = time.perf_counter()
            opacity = F.interpolate(out.opacity.permute(0, 3, 1, 2), size=z.shape[-2:], mode="bilinear")
            result = opt.method.gradient(
                DistillInput(
                    z=z,
                    cond=opt._text_for(cams),
                    uncond=opt.uncond,
                    step=i,
                    total_steps=1000,
                    rng=opt.noise_rng,
                    camera=cams.as_condition(),
                    opacity=opacity.detach(),
                )
            )
            sync()
            t3 = time.perf_counter()
            opt.optimizer.zero_grad()
            surrogate_loss(z, result.grad).backward()
            opt.optimizer.step()
            sync()
            t4 = time.perf_counter()
            if i >= args.warmup:
                for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    times[k].append(v * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(
            f"{res:>5} {med['render']:>9.1f} {med['encode']:>9.1f} {med['unet']:>9.1f} {med['backward']:>9.1f} "
            f"{sum(med.values()):>9.1f} {peak:>9.2f}"
        )


if __name__ == "__main__":
    main()
