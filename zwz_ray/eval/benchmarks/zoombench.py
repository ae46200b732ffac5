"""ZoomBench (inclusionAI/ZoomBench) and the reference's own JSON layout.

ZoomBench: 845 questions in 6 dimensions, each with the full image and the crop of its region
(`id, query|prompt, response|answer, image, crop_image, question_type, bbox`; the hub copy names
question and answer `prompt` / `answer`). Both views are scored, as two benchmarks.
The reference's evaluation files are JSON lists of `{images: [path], crop_images: [path], query,
response}` with absolute paths (remapped through benchmark.image_root).
"""

from __future__ import annotations

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, need, plain_score


def _text(row: dict, names: tuple[str, ...]) -> str:
    for n in names:
        if row.get(n) is not None:
            return str(need(row, n, (str, int, float)))
    raise LayoutError(names[0], f"is missing (nor {', '.join(names[1:])})")


def _zoombench(row: dict) -> list[dict]:
    return [{"id": str(need(row, "id", (str, int))), "question": _text(row, ("query", "prompt")),
             "answer": _text(row, ("response", "answer")), "image": row.get("image"), "crop": row.get("crop_image"),
             "bbox": row.get("bbox"), "category": row.get("question_type")}]


def _reference(row: dict) -> list[dict]:
    rid = row.get("id", row.get("question_id", row.get("__row__")))
    return [{"id": str(rid), "question": _text(row, ("query",)), "answer": _text(row, ("response",)),
             "image": need(row, "images", list), "crop": row.get("crop_images"), "bbox": row.get("bbox"),
             "category": row.get("question_type", row.get("category"))}]


PRESETS = [
    Preset("zoombench", "ZoomBench", "hf://datasets/inclusionAI/ZoomBench", ("id", "image"), _zoombench,
           lambda df: plain_score(df, "category"), "the dataset card of inclusionAI/ZoomBench",
           files=("**/*.parquet",), image_columns=("image", "crop_image")),
    Preset("reference", "Reference JSON", "", ("images", "query", "response"), _reference,
           lambda df: plain_score(df, "category"), "the reference implementation's evaluation JSON files",
           files=("**/*.json", "**/*.jsonl"), image_columns=("images", "crop_images")),
]
