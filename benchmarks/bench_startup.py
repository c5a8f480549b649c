#!/usr/bin/env python
"""Time to the first training batch on a huge local Common Voice folder, cold and warm duration cache
(issue 14.3).

Builds a synthetic release of `--clips` clips: `<root>/<lang>/clips/*.mp3` hard links to the tiny demo
corpus's real mp3 files (built if missing) and a `train.tsv` per language with their transcripts. Then, each
in a fresh process, it runs the trainer's own start-up path up to the first collated batch:

    load_map_style (TSVs -> records -> clip durations from the headers, in `--workers` processes, cached in
    <run>/duration_cache -> Arrow table -> length limit) -> training_sampler (duration packing)
    -> processor from the transcripts -> collator -> DataLoader -> first batch

once with an empty cache ("cold") and once with the cache the first run left ("warm"). The files are hard
links to a few files, so the page cache holds them: "cold" measures the cost of parsing headers (CPU), not
of the disk. Reported per run: seconds to the first batch, of which reading headers; clips/s per core of the
header reading; peak RSS of the process against its RSS after imports, and of its largest header worker
(forked children; 0 when the headers come from the cache or are read in-process).

    nice -n 10 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_startup.py --clips 200000 --workers 2

Measured (200,000 clips in 7 language folders; 2 cores shared with another training job, load average ~3.9,
so figures vary by +-25 % between runs):
    cold: first batch after 14.6 s, of which headers 10.9 s with 2 forked processes (9.1k clips/s per core);
          one process: 12.7 s (15.8k clips/s; 19k clips/s on 20,000 clips)
    warm: first batch after 3.8 s, of which 0.2 s to read the 5 MB cache; the rest is the TSVs, the Arrow
          table, the skip rules, duration packing and the processor
    peak RSS 771 MB against 427 MB after imports: ~1.7 kB per clip for the index (Python record dicts
          ~0.5 kB of it); a header worker's 611 MB is mostly pages shared with its parent (fork); the cache of
          a one-language folder of 1M clips would be ~25 MB.
"""

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_release(root: Path, clips: int, corpus: Path) -> Path:
    """`clips` hard links spread over the corpus's languages, with a train.tsv each (reused if complete)."""
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"clips": clips}:
        return root
    shutil.rmtree(root, ignore_errors=True)
    sources = []  # (language, mp3 path, sentence)
    for table in sorted((corpus / "cv").glob("*/train.tsv")):
        with open(table, encoding="utf-8", newline="") as file:
            for row in csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE):
                sources.append((table.parent.name, table.parent / "clips" / row["path"], row["sentence"]))
    start = time.perf_counter()
    writers = {}
    for number in range(clips):
        language, path, sentence = sources[number % len(sources)]
        if language not in writers:
            (root / language / "clips").mkdir(parents=True)
            table = open(root / language / "train.tsv", "w", encoding="utf-8")
            table.write("path\tsentence\n")
            writers[language] = table
        name = f"clip_{number:08d}.mp3"
        os.link(path, root / language / "clips" / name)
        writers[language].write(f"{name}\t{sentence}\n")
    for table in writers.values():
        table.close()
    marker.write_text(json.dumps({"clips": clips}))
    print(f"built {clips} hard links in {time.perf_counter() - start:.1f} s under {root}", file=sys.stderr)
    return root


def first_batch(release: Path, run: Path, workers: int) -> dict:
    """One start-up in this process; returns its timings and memory (called in a fresh process)."""
    import logging

    import torch

    from modeling_mlpl import MlplProcessor
    from mlpl.collate import MlplCollator
    from mlpl.config import DataConfig, SourceConfig
    from mlpl.data import records_of
    from mlpl.header_index import HeaderScan
    from mlpl.trainer_data import DURATION_CACHE, load_map_style, training_sampler

    logging.disable(logging.WARNING)  # the per-source INFO lines would flood the output
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    timings = {}
    import mlpl.data

    original = mlpl.data.read_headers

    def timed_read_headers(*args, **kwargs):
        began = time.perf_counter()
        result = original(*args, **kwargs)
        timings["headers_s"] = timings.get("headers_s", 0.0) + time.perf_counter() - began
        return result

    mlpl.data.read_headers = timed_read_headers  # what the data layer calls
    data = DataConfig(train=[SourceConfig(kind="common_voice", path=str(release))], scan_workers=workers)
    dataset = load_map_style(data.train, "train", data.max_clip_seconds, HeaderScan(run / DURATION_CACHE, workers))
    timings["index_s"] = time.perf_counter() - start
    index_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sampler = training_sampler(dataset, data, seed=0, num_replicas=1, rank=0)
    processor = MlplProcessor.from_transcripts(records_of(dataset)["sentence"])
    languages = sorted(records_of(dataset).unique("language"))
    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, {code: i for i, code in enumerate(languages)})
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    batch = next(iter(loader))
    return {
        "clips": len(dataset),
        "first_batch_s": time.perf_counter() - start,
        "headers_s": timings.get("headers_s", 0.0),
        "index_s": timings["index_s"],
        "batch_utterances": len(batch["ids"]),
        "rss_after_imports_mb": baseline / 1024,
        "peak_rss_index_mb": index_rss / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_header_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "cache_mb": sum(p.stat().st_size for p in (run / DURATION_CACHE).glob("*.npz")) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=None, help="header-reading processes (default: every CPU)")
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "mlpl_bench_startup"))
    parser.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "mlpl_demo_tiny"))
    parser.add_argument("--child", nargs=2, metavar=("RELEASE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from mlpl.header_index import default_workers

    workers = args.workers or default_workers()
    if args.child:
        print(json.dumps(first_batch(Path(args.child[0]), Path(args.child[1]), workers)))
        return

    from mlpl.demo_corpus import make_demo_corpus

    corpus = make_demo_corpus(args.corpus, size="tiny", seed=0)
    root = Path(args.root)
    release = build_release(root / f"cv_{args.clips}", args.clips, corpus)
    run = root / "run"
    shutil.rmtree(run / "duration_cache", ignore_errors=True)
    results = {}
    for mode in ("cold", "warm"):
        command = [sys.executable, __file__, "--child", str(release), str(run), "--workers", str(workers), "--clips", str(args.clips)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode:
            sys.exit(f"{mode} run failed:\n{completed.stderr[-3000:]}")
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
    cold = results["cold"]
    results["cold_header_clips_per_s_per_core"] = cold["clips"] / cold["headers_s"] / workers
    results["workers"] = workers
    print(json.dumps(results, indent=2))
    for mode in ("cold", "warm"):
        r = results[mode]
        print(
            f"{mode}: {r['clips']} clips, first batch after {r['first_batch_s']:.1f} s (headers {r['headers_s']:.1f} s, index "
            f"{r['index_s']:.1f} s); peak RSS {r['peak_rss_mb']:.0f} MB (after imports {r['rss_after_imports_mb']:.0f} MB, "
            f"index built {r['peak_rss_index_mb']:.0f} MB), header worker {r['peak_rss_header_worker_mb']:.0f} MB; "
            f"duration cache {r['cache_mb']:.1f} MB",
            file=sys.stderr,
        )
    print(f"cold header reading: {results['cold_header_clips_per_s_per_core']:.0f} clips/s per core ({workers} processes)", file=sys.stderr)


if __name__ == "__main__":
    main()
