"""Ingest throughput against its ceiling, on the same N real stamp PNGs, in one run.

(a) Ceiling: the offline backbone's image encoder (`Backbone("offline").encode_images`, fp32,
    channels_last input) over preloaded, already-preprocessed tensors in batches of 32: images/s
    with no decoding, no I/O, no store. Measured in every round, next to the ingests, and once
    after the last one; the median is the ceiling (load from other jobs shows as the spread).
(b) `jointspace ingest FOLDER --json` as a real subprocess of the console script, into an empty
    JOINTSPACE_HOME (so every image is decoded and encoded), with a small model trained
    beforehand (`jointspace train --epochs 3`, in another home: train fills its feature cache).
    Throughput = "ingested" / "seconds" (the command's own timer; where the version measured
    loads the backbone lazily, inside that timer, the rate without the backbone's load time is
    shown too); wall-clock throughput (whole process, startup included) also shown.

ratio = ingest_ips / ceiling_ips (1.0: ingest runs as fast as the bare backbone). Ingest also runs
the text tower on every caption, so the text tower's rate over the same captions is measured
too, with the image+text ceiling 1 / (1/image ips + 1/text ips).

Wall-clock rates move with load from other jobs on a shared machine; CPU time per image moves
much less (the ceiling: this process's CPU time; ingest: the subprocess's and its workers' CPU
time minus that of a `--limit 0` run, i.e. startup), so the ratio is given in both.

Rounds (--rounds, default 2) interleave everything in a rotated order; comparisons are paired
within a round. Options, each in its own empty home: ingest `--workers 0|1|2` and
`--batch-size 16|32|64`; the ceiling at batch 16/64, and with bf16 autocast on CPU and
with/without channels_last input (library code is not changed: the variants call the
backbone's open_clip model directly). The text tower is also measured with its tokens cut to the
batch's longest caption (a direct call: equal to the library where it trims padding itself).

    .venv/bin/python benchmarks/ingest.py --n 512

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import (
    Stamp,
    backbone_loads_in_timer,
    emit_json,
    fresh_home,
    machine,
    machine_summary,
    make_folder_corpus,
    print_machine,
    print_table,
    run_cli,
    select_stamps,
    startup_breakdown,
    train_model,
    workdir,
)

from jointspace.corpus.images import decode_image, read_image_bytes
from jointspace.corpus.item import Item
from jointspace.pipeline.backbone import Backbone


def preprocess_all(stamps: list[Stamp], backbone: Backbone) -> tuple[torch.Tensor, float]:
    """All images decoded and preprocessed exactly as ingest does, stacked (N, 3, H, W); and
    the single-process decode+preprocess rate (images/s)."""
    started = time.perf_counter()
    tensors = []
    for stamp in stamps:
        item = Item(source="bench", key=str(stamp.path), image=str(stamp.path))
        image = decode_image(read_image_bytes(item), str(stamp.path))
        tensors.append(backbone.preprocess(image))
    seconds = time.perf_counter() - started
    return torch.stack(tensors), len(stamps) / seconds


def library_encoder(backbone: Backbone) -> Callable[[torch.Tensor], np.ndarray]:
    """The exact library path ingest uses (fp32, channels_last input)."""
    return backbone.encode_images


def variant_encoder(
    backbone: Backbone, channels_last: bool, bf16: bool
) -> Callable[[torch.Tensor], np.ndarray]:
    """The backbone's open_clip image tower with the input layout and autocast chosen here."""
    model = backbone.model
    layout = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def encode(batch: torch.Tensor) -> np.ndarray:
        batch = batch.contiguous(memory_format=layout)
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model.encode_image(batch).float().numpy()
        return model.encode_image(batch).float().numpy()

    return encode


@dataclass
class Rate:
    """Items per second of wall time, and CPU milliseconds (all threads) per item."""

    ips: float
    cpu_ms: float


def timed(work: Callable[[], None], items: int) -> Rate:
    started, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Rate(items / wall, 1000 * cpu / items)


def encode_rate(
    encode: Callable[[torch.Tensor], np.ndarray], pixels: torch.Tensor, batch_size: int
) -> Rate:
    """Rate of `encode` over all of `pixels` in batches (after one untimed warm-up batch)."""
    encode(pixels[:batch_size])

    def work() -> None:
        for start in range(0, len(pixels), batch_size):
            encode(pixels[start : start + batch_size])

    return timed(work, len(pixels))


def trimmed_text_encoder(backbone: Backbone) -> Callable[[list[str]], np.ndarray]:
    """What-if (not library code): the text tower on tokens cut to the batch's longest caption
    instead of padded to the tokenizer's context length (the attention mask already hides the
    padding, so the features are the same up to float rounding)."""
    model, tokenizer = backbone.model, backbone.tokenizer
    pad = model.text.config.pad_token_id

    @torch.inference_mode()
    def encode(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts)
        longest = int((tokens != pad).sum(dim=1).max())
        return model.encode_text(tokens[:, :longest]).float().numpy()

    return encode


def text_rate(encode: Callable[[list[str]], np.ndarray], texts: list[str], batch_size: int) -> Rate:
    """Rate of `encode` over `texts` in batches (after one untimed warm-up batch)."""
    encode(texts[:batch_size])

    def work() -> None:
        for start in range(0, len(texts), batch_size):
            encode(texts[start : start + batch_size])

    return timed(work, len(texts))


def cosine_to(reference: np.ndarray, other: np.ndarray) -> float:
    """Smallest per-row cosine similarity between two feature arrays."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def rotated(items: list, by: int) -> list:
    """`items` starting at position `by` (so each round runs them in another order)."""
    by %= len(items)
    return items[by:] + items[:by]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired(runs: dict[str, list[float]], base: str, higher_is_faster: bool = True) -> dict:
    """Per key, the median over rounds of its speed relative to `base` in the same round."""
    return {
        key: median(
            [v / b if higher_is_faster else b / v for v, b in zip(vs, runs[base], strict=False)]
        )
        for key, vs in runs.items()
    }


def ingest_command(
    corpus: Path, model_dir: str, workers: int, batch_size: int, extra: Sequence[str] = ()
) -> list[str]:
    return [
        "ingest",
        str(corpus),
        "--collection",
        "bench",
        "--model",
        model_dir,
        "--workers",
        str(workers),
        "--batch-size",
        str(batch_size),
        "--json",
        "-q",
        *extra,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="stamp PNGs (at most 796)")
    parser.add_argument("--seed", type=int, default=0, help="which stamps are drawn")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds; each measures every ceiling variant and every ingest option once, in a "
        "rotated order (medians are reported)",
    )
    parser.add_argument("--model", help="use this trained model folder instead of training one")
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    parser.add_argument(
        "--skip-options", action="store_true", help="only the ceiling and the default ingest"
    )
    args = parser.parse_args()

    work = workdir("ingest", args.workdir)
    before = machine()
    print_machine("start", before)
    print(f"workdir: {work}")
    stamps = select_stamps(args.n, args.seed)
    corpus = make_folder_corpus(stamps, work / "corpus")
    torch_threads = torch.get_num_threads()

    # preloaded inputs, the model (all untimed) ------------------------------------------------
    backbone = Backbone("offline")
    pixels, preprocess_ips = preprocess_all(stamps, backbone)
    captions = [stamp.caption for stamp in stamps]
    tokens = backbone.tokenizer(captions)
    token_lengths = (tokens != backbone.model.text.config.pad_token_id).sum(dim=1).float()
    if args.model:
        model_dir, train_wall = args.model, None
    else:
        model_dir = str(work / "model")
        train_wall = train_model(corpus, work / "model", fresh_home(work, "train")).wall_s

    library = "library fp32 channels_last b32"
    variants: dict[str, tuple[Callable[[torch.Tensor], np.ndarray], int]] = {
        library: (library_encoder(backbone), 32),
        "fp32 NCHW b32": (variant_encoder(backbone, channels_last=False, bf16=False), 32),
        "bf16 autocast channels_last b32": (
            variant_encoder(backbone, channels_last=True, bf16=True),
            32,
        ),
        "bf16 autocast NCHW b32": (variant_encoder(backbone, channels_last=False, bf16=True), 32),
    }
    if not args.skip_options:
        variants["library fp32 channels_last b16"] = (library_encoder(backbone), 16)
        variants["library fp32 channels_last b64"] = (library_encoder(backbone), 64)
    reference = backbone.encode_images(pixels[:32])
    bf16_cosine = {
        name: cosine_to(reference, encode(pixels[:32]))
        for name, (encode, _) in variants.items()
        if "bf16" in name
    }
    text_library, text_trimmed = "library encode_texts", "tokens cut to batch's longest (direct)"
    text_variants = {
        text_library: backbone.encode_texts,
        text_trimmed: trimmed_text_encoder(backbone),
    }
    trimmed_cosine = cosine_to(
        backbone.encode_texts(captions[:32]), text_variants[text_trimmed](captions[:32])
    )
    configs = [(1, 32)]
    if not args.skip_options:
        configs += [(0, 32), (2, 32), (1, 16), (1, 64)]
    default = "workers 1 batch 32"

    # rounds: (a) the ceiling and its variants, the text tower, (b) every ingest option --------
    rates: dict[str, list[Rate]] = {name: [] for name in variants}
    text_rates: dict[str, list[Rate]] = {name: [] for name in text_variants}
    ingests: dict[str, list[dict[str, float]]] = {}
    startup_cpu: list[float] = []
    backbone_load: list[dict[str, float]] = []
    lazy_backbone = backbone_loads_in_timer()
    for round_ in range(args.rounds):
        for name in rotated(list(variants), round_):
            encode, batch_size = variants[name]
            rates[name].append(encode_rate(encode, pixels, batch_size))
        for name, encode in text_variants.items():
            text_rates[name].append(text_rate(encode, captions, 32))
        # what a run that reads nothing costs in CPU (imports, model loading, store, exit; and
        # the backbone, unless this version loads it only when there is something to encode):
        # subtracted from each ingest's CPU time to estimate CPU per ingested image
        startup = ingest_command(corpus, model_dir, 1, 32, ["--limit", "0"])
        startup_cpu.append(run_cli(startup, fresh_home(work, "startup"), sample_memory=False).cpu_s)
        backbone_load.append(startup_breakdown(model_dir))
        if lazy_backbone:
            startup_cpu[-1] += backbone_load[-1]["backbone_cpu_s"]
        in_timer = backbone_load[-1]["backbone_s"] if lazy_backbone else 0.0
        for workers, batch_size in rotated(configs, round_):
            label = f"workers {workers} batch {batch_size}"
            home = fresh_home(work, f"ingest-w{workers}-b{batch_size}")
            run = run_cli(ingest_command(corpus, model_dir, workers, batch_size), home)
            doc = run.document
            if doc["ingested"] != args.n:
                print(f"warning: {label}: ingested {doc['ingested']} of {args.n} ({doc})")
            ingests.setdefault(label, []).append(
                {
                    "seconds": doc["seconds"],
                    "ips": doc["ingested"] / doc["seconds"],
                    # the rate once the backbone is loaded (differs where "seconds" includes it)
                    "ips_loaded": doc["ingested"] / max(doc["seconds"] - in_timer, 1e-3),
                    "cpu_ms": 1000 * (run.cpu_s - startup_cpu[-1]) / max(doc["ingested"], 1),
                    "wall_s": run.wall_s,
                    "wall_ips": doc["ingested"] / run.wall_s,
                    "peak_tree_rss_mb": run.memory.tree_rss_mb,
                }
            )
    # the ceiling once more after the last ingest: how far the load moved shows in the spread
    ceiling_after = encode_rate(variants[library][0], pixels, 32)
    after = machine()

    # summary -------------------------------------------------------------------------------------
    ceiling_runs = [r.ips for r in rates[library]] + [ceiling_after.ips]
    ceiling = median(ceiling_runs)
    ceiling_cpu_ms = median([r.cpu_ms for r in rates[library]] + [ceiling_after.cpu_ms])
    variant_ips = {name: [r.ips for r in rs] for name, rs in rates.items()}
    variant_cpu = {name: [r.cpu_ms for r in rs] for name, rs in rates.items()}
    variant_paired = paired(variant_ips, library)
    variant_cpu_paired = paired(variant_cpu, library, higher_is_faster=False)
    text_ips = {name: [r.ips for r in rs] for name, rs in text_rates.items()}
    text_cpu = {name: [r.cpu_ms for r in rs] for name, rs in text_rates.items()}
    text_paired = paired(text_ips, text_library)
    ingest_ips_runs = {label: [r["ips"] for r in runs] for label, runs in ingests.items()}
    ingest_cpu_runs = {label: [r["cpu_ms"] for r in runs] for label, runs in ingests.items()}
    ingest_paired = paired(ingest_ips_runs, default)
    ingest_cpu_paired = paired(ingest_cpu_runs, default, higher_is_faster=False)
    medians = {
        label: {key: median([r[key] for r in runs]) for key in runs[0]}
        for label, runs in ingests.items()
    }
    ingest_ips = medians[default]["ips"]
    # the same ratio paired round by round (ingest vs the ceiling measured just before it), and
    # in CPU time per image, which load from other jobs disturbs much less than wall time
    ratio_paired = median(
        [i / c.ips for i, c in zip(ingest_ips_runs[default], rates[library], strict=True)]
    )
    ratio_cpu = ceiling_cpu_ms / medians[default]["cpu_ms"]
    text_ceiling = median(text_ips[text_library])
    text_cpu_ms = median(text_cpu[text_library])
    both = 1 / (1 / ceiling + 1 / text_ceiling)
    both_cpu_ms = ceiling_cpu_ms + text_cpu_ms
    best_variant = max(variant_paired, key=variant_paired.get)

    spread = ", ".join(f"{x:.1f}" for x in ceiling_runs)
    print_table(
        f"ceiling: backbone image encode over {args.n} preloaded tensors (torch threads "
        f"{torch_threads}; median of {args.rounds} rounds; library b32 runs: {spread})",
        [
            "variant",
            "images/s",
            "speed vs library (paired)",
            "CPU ms/image",
            "CPU vs library (paired)",
            "min cos vs fp32",
        ],
        [
            [
                name,
                median(variant_ips[name]),
                variant_paired[name],
                median(variant_cpu[name]),
                variant_cpu_paired[name],
                f"{bf16_cosine[name]:.4f}" if name in bf16_cosine else "-",
            ]
            for name in variants
        ],
    )
    print(f"decode+preprocess in one process (PIL + transforms): {preprocess_ips:.1f} images/s")
    print_table(
        f"text tower over the same {args.n} captions, batches of 32 (tokens per caption: "
        f"mean {float(token_lengths.mean()):.1f}, max {int(token_lengths.max())}, "
        f"padded to {tokens.shape[1]})",
        ["variant", "texts/s", "speed vs library (paired)", "CPU ms/text", "min cos vs library"],
        [
            [
                name,
                median(text_ips[name]),
                text_paired[name],
                median(text_cpu[name]),
                "-" if name == text_library else f"{trimmed_cosine:.6f}",
            ]
            for name in text_variants
        ],
    )
    print(
        f"image+text ceiling (one item = one image + one caption, nothing else): {both:.1f} "
        f"items/s, {both_cpu_ms:.0f} CPU ms/item"
    )
    trained = f"; model trained in {train_wall:.0f} s" if train_wall else ""
    load_s = median([b["backbone_s"] for b in backbone_load])
    timer_note = (
        f'this version loads the backbone inside "seconds" (median {load_s:.1f} s, measured '
        "apart): 'loaded images/s' leaves it out"
        if lazy_backbone
        else f'"seconds" starts after the backbone is loaded ({load_s:.1f} s, measured apart)'
    )
    print_table(
        f"jointspace ingest of the same {args.n} images (empty home each run{trained}; "
        f"median of {args.rounds} rounds; CPU ms/image = (run's CPU - startup CPU, median "
        f"{median(startup_cpu):.1f} s) / images; {timer_note})",
        [
            "options",
            "seconds",
            "images/s",
            "loaded images/s",
            "speed vs default (paired)",
            "vs ceiling",
            "CPU ms/image",
            "CPU vs default (paired)",
            "wall s",
            "wall images/s",
            "peak RSS MB",
        ],
        [
            [
                label,
                m["seconds"],
                m["ips"],
                m["ips_loaded"],
                ingest_paired[label],
                m["ips"] / ceiling,
                m["cpu_ms"],
                ingest_cpu_paired[label],
                m["wall_s"],
                m["wall_ips"],
                m["peak_tree_rss_mb"],
            ]
            for label, m in medians.items()
        ],
    )
    print(
        f"\nceiling {ceiling:.1f} images/s; ingest {ingest_ips:.1f} images/s; ratio "
        f"{ingest_ips / ceiling:.2f} (paired per round: {ratio_paired:.2f}; in CPU per image: "
        f"{ratio_cpu:.2f}); vs the image+text ceiling {ingest_ips / both:.2f} (CPU: "
        f"{both_cpu_ms / medians[default]['cpu_ms']:.2f}); fastest ceiling variant: {best_variant}"
    )
    print_machine("end", after)
    emit_json(
        {
            "ceiling_ips": round(ceiling, 2),
            "ingest_ips": round(ingest_ips, 2),
            "ratio": round(ingest_ips / ceiling, 3),
            "ratio_paired": round(ratio_paired, 3),
            "ratio_cpu": round(ratio_cpu, 3),
            "n": args.n,
            "rounds": args.rounds,
            "ceiling_runs_ips": [round(x, 2) for x in ceiling_runs],
            "ingest_runs_ips": [round(x, 2) for x in ingest_ips_runs[default]],
            "ceiling_cpu_ms_per_image": round(ceiling_cpu_ms, 1),
            "ingest_cpu_ms_per_image": round(medians[default]["cpu_ms"], 1),
            "ingest_wall_ips": round(medians[default]["wall_ips"], 2),
            "backbone_load_in_seconds": lazy_backbone,
            "backbone_load_s": round(load_s, 2),
            "ingest_ips_backbone_loaded": round(medians[default]["ips_loaded"], 2),
            "ratio_backbone_loaded": round(medians[default]["ips_loaded"] / ceiling, 3),
            "preprocess_ips": round(preprocess_ips, 2),
            "text_ips": round(text_ceiling, 2),
            "text_trimmed_ips": round(median(text_ips[text_trimmed]), 2),
            "text_trimmed_speedup": round(text_paired[text_trimmed], 3),
            "image_text_ceiling_ips": round(both, 2),
            "ratio_vs_image_text_ceiling": round(ingest_ips / both, 3),
            "ceiling_variants_ips": {k: round(median(v), 2) for k, v in variant_ips.items()},
            "ceiling_variants_vs_library": {k: round(v, 3) for k, v in variant_paired.items()},
            "ceiling_variants_cpu_vs_library": {
                k: round(v, 3) for k, v in variant_cpu_paired.items()
            },
            "bf16_min_cosine": {k: round(v, 4) for k, v in bf16_cosine.items()},
            "fastest_ceiling_variant": best_variant,
            "ingest_variants_ips": {k: round(v["ips"], 2) for k, v in medians.items()},
            "ingest_variants_vs_default": {k: round(v, 3) for k, v in ingest_paired.items()},
            "ingest_variants_cpu_vs_default": {
                k: round(v, 3) for k, v in ingest_cpu_paired.items()
            },
            "torch_threads": torch_threads,
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()
