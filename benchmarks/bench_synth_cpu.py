"""CPU stages of R2I synthesis: Ray Data vs a sequential per-image PIL loop, side by side.

    python benchmarks/bench_synth_cpu.py                    # 12 demo scenes, local Ray
    python benchmarks/bench_synth_cpu.py --images 32 --num-cpus 8

Both paths do the same work on the same generated scenes, using each scene's known details as
the grounded boxes: decode and check the image (stage 1), clamp, crop, 2x Lanczos upscale and
PNG-encode every box (stage 4), draw the red box and PNG-encode the overlay (stage 9).

* sequential: one process, one image after another, the way reference scripts do it;
* ray: the pipeline's own stage classes (ImagePool, MicroCrop, Overlay) as Ray Data tasks.

Reported: crops per second for both (Ray start-up excluded, a warm-up run first) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from PIL import Image, ImageDraw


def scenes(n: int, cache: str) -> list[tuple[str, list[list[int]]]]:
    from zwz_ray.demo import ensure_demo_images, load_manifest

    folder = os.path.join(cache, f"bench_scenes_{n}")
    ensure_demo_images(folder, n=n, seed=0)
    return [(os.path.join(folder, e["image"]), [d["box"] for d in e["details"]]) for e in load_manifest(folder)]


def sequential(work: list[tuple[str, list]], upscale: float = 2.0) -> dict:
    """A plain loop: open, crop + resize + save each box, draw + save each overlay."""
    import io

    start, crops = time.perf_counter(), 0
    for path, boxes in work:
        with open(path, "rb") as fh:
            image = Image.open(io.BytesIO(fh.read())).convert("RGB")
        if min(image.size) <= 1200:
            continue
        for x1, y1, x2, y2 in boxes:
            crop = image.crop((x1, y1, x2, y2))
            crop = crop.resize((round(crop.width * upscale), round(crop.height * upscale)), Image.Resampling.LANCZOS)
            crop.save(io.BytesIO(), "PNG")
            dx, dy = 0.05 * (x2 - x1), 0.05 * (y2 - y1)
            overlay = image.copy()
            ImageDraw.Draw(overlay).rectangle((max(0, x1 - dx), max(0, y1 - dy), min(image.width, x2 + dx) - 1,
                                               min(image.height, y2 + dy) - 1), outline=(255, 0, 0), width=5)
            overlay.save(io.BytesIO(), "PNG")
            crops += 1
    return {"seconds": time.perf_counter() - start, "crops": crops}


def ray_pipeline(work: list[tuple[str, list]], num_cpus: float, batch_size: int) -> dict:
    import ray

    from zwz_ray.synth.columns import child, to_rows, to_table
    from zwz_ray.synth.config import CropConfig, InputConfig, OverlayConfig
    from zwz_ray.synth.stages import ImagePool, MicroCrop, Overlay

    boxes = {path: b for path, b in work}

    def grounded(batch):  # stands in for proposal + grounding: the scene's known boxes
        out = []
        for row in to_rows(batch):
            for i, box in enumerate(boxes[row["source"]]):
                out.append(child(row, i == 0, object_index=i, n_objects=len(boxes[row["source"]]), object_name=f"d{i}",
                                 grounding_box=[float(v) for v in box], question_index=0, n_questions=1, question="Q?"))
        return to_table(out)

    crop_cfg = CropConfig(max_area_frac=1.0)
    kw = dict(batch_format="pyarrow", batch_size=batch_size, num_cpus=num_cpus, zero_copy_batch=False)
    start = time.perf_counter()
    ds = ray.data.from_items([{"source": p} for p, _ in work], override_num_blocks=len(work))
    ds = ds.map_batches(ImagePool(InputConfig()), **kw).map_batches(grounded, **kw)
    ds = ds.map_batches(MicroCrop(crop_cfg, InputConfig()), **kw).map_batches(Overlay(OverlayConfig(), InputConfig()), **kw)
    crops = sum(int(b.num_rows) for b in ds.select_columns(["source"]).iter_batches(batch_format="pyarrow", batch_size=None))
    return {"seconds": time.perf_counter() - start, "crops": crops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: all cores)")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per Ray task")
    p.add_argument("--batch-size", type=int, default=1, help="rows per task batch")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "zwz_bench"))
    args = p.parse_args()

    import ray

    from zwz_ray.config import RayConfig
    from zwz_ray.runtime import init_ray

    work = scenes(args.images, args.cache)
    init_ray(RayConfig(num_cpus=args.num_cpus, progress_bars=False, log_to_driver=False))
    ray_pipeline(work[:2], args.task_cpus, args.batch_size)  # warm-up: worker processes, imports
    seq = sequential(work)
    par = ray_pipeline(work, args.task_cpus, args.batch_size)
    assert seq["crops"] == par["crops"], (seq, par)
    cores = ray.cluster_resources().get("CPU", 0)
    print(f"images: {len(work)}, crops+overlays: {seq['crops']}, Ray CPUs: {cores:g} (machine cores: {os.cpu_count()})")
    for name, r in (("sequential PIL loop", seq), ("Ray Data stages", par)):
        print(f"{name:>20}: {r['seconds']:7.2f} s  {r['crops'] / r['seconds']:7.2f} crops/s")
    print(f"ratio Ray Data / sequential: {seq['seconds'] / par['seconds']:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
