#!/usr/bin/env python3
"""Build the NaturalReasoning pipeline sample corpus from Debian manual pages.

The corpus is real text that nobody on this project wrote: Debian's manual
pages (the Linux man-pages project and the manpages-l10n / JM translations),
rendered to plain UTF-8 text with man-db + groff, sampled deterministically
into a mix of about 65% English and 35% other languages, and written to a
zstd-compressed Parquet file.

Typical use (as root, on Debian bookworm):

    python pipelines/data/build_sample.py \
        --out pipelines/data/natural_reasoning_sample.parquet --docs 2000 --seed 0

The output only depends on --docs/--seed/the other options and on the
installed package versions, which are printed and stored in the Parquet
schema metadata.  See pipelines/data/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "natural_reasoning_sample.parquet"

# Tools needed to render the pages (man-db pulls in bsdextrautils for col).
TOOL_PACKAGES = ["man-db", "groff-base"]

# lang (value of the `lang` column) -> (directory under /usr/share/man, packages).
# "en" pages live directly in /usr/share/man/manN.  All packages below exist
# in Debian 12 (bookworm); manpages-it has no -dev companion there.
# manpages + manpages-dev hold only ~1,070 English pages in sections
# 1,2,3,5,7,8, too few for a 65% share of 2,000 docs, so the English pool also
# takes the (English-only) pages of four base packages with well-written
# manuals: coreutils, util-linux, git-man and iproute2.
LANGS: dict[str, tuple[str, list[str]]] = {
    "en": ("", ["manpages", "manpages-dev", "coreutils", "util-linux", "git-man", "iproute2"]),
    "de": ("de", ["manpages-de", "manpages-de-dev"]),
    "fr": ("fr", ["manpages-fr", "manpages-fr-dev"]),
    "es": ("es", ["manpages-es", "manpages-es-dev"]),
    "it": ("it", ["manpages-it"]),
    "pl": ("pl", ["manpages-pl", "manpages-pl-dev"]),
    "ru": ("ru", ["manpages-ru", "manpages-ru-dev"]),
    "pt_BR": ("pt_BR", ["manpages-pt-br", "manpages-pt-br-dev"]),
    "ja": ("ja", ["manpages-ja", "manpages-ja-dev"]),
}

SECTIONS = (1, 2, 3, 5, 7, 8)
MAN_ROOT = Path("/usr/share/man")

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_OVERSTRIKE_RE = re.compile(r"[^\x08\n]\x08+")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLANK_RUN_RE = re.compile(r"\n{3,}")


def all_packages() -> list[str]:
    pkgs = list(TOOL_PACKAGES)
    for _, lang_pkgs in LANGS.values():
        pkgs.extend(lang_pkgs)
    return pkgs


# --------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------


def package_versions(packages: list[str]) -> dict[str, str | None]:
    """Installed version of each package (None if not installed)."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}\t${Version}", pkg],
            capture_output=True,
            text=True,
        )
        status, _, version = res.stdout.partition("\t")
        out[pkg] = version if res.returncode == 0 and status == "installed" else None
    return out


def ensure_installed(packages: list[str], allow_install: bool) -> None:
    missing = [p for p, v in package_versions(packages).items() if v is None]
    if not missing:
        return
    if not allow_install:
        sys.exit("missing packages (rerun without --no-install, as root): " + " ".join(missing))
    if os.geteuid() != 0:
        sys.exit("installing packages needs root; missing: " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("installing:", " ".join(missing), flush=True)
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        check=True,
        env=env,
    )
    still = [p for p, v in package_versions(packages).items() if v is None]
    if still:
        sys.exit("packages still missing after apt-get install: " + " ".join(still))


# --------------------------------------------------------------------------
# Candidate pages
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    lang: str
    package: str
    path: str  # absolute path of the (gzipped) roff source
    name: str  # e.g. "ls.1"
    section: int

    @property
    def doc_id(self) -> str:
        return f"man:{self.lang}:{self.name}"


def _is_so_stub(path: str) -> bool:
    """True for pages that only redirect (`.so other/page.N`) to another page."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return True
    for line in head.splitlines():
        line = line.strip()
        if not line or line.startswith((b'.\\"', b"'\\\"", b".\\#")):
            continue
        return line.startswith(b".so ")
    return True


def list_pages(lang: str) -> list[Page]:
    subdir, packages = LANGS[lang]
    base = MAN_ROOT / subdir if subdir else MAN_ROOT
    pat = re.compile(re.escape(str(base)) + r"/man(\d)/([^/]+)$")
    pages: dict[str, Page] = {}
    seen_files = 0
    for pkg in packages:
        res = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True, check=True)
        for path in sorted(res.stdout.splitlines()):
            m = pat.match(path)
            if not m:
                continue
            section = int(m.group(1))
            if section not in SECTIONS:
                continue
            seen_files += 1
            if os.path.islink(path) or not os.path.isfile(path):
                continue  # aliases are symlinks to another page
            name = m.group(2)
            if name.endswith(".gz"):
                name = name[: -len(".gz")]
            if _is_so_stub(path):
                continue
            page = Page(lang, pkg, path, name, section)
            pages.setdefault(page.doc_id, page)
    if seen_files and not pages:
        sys.exit(
            f"{lang}: dpkg lists man pages but none are on disk; does "
            "/etc/dpkg/dpkg.cfg.d/ exclude /usr/share/man? (minimal images do)"
        )
    return sorted(pages.values(), key=lambda p: p.doc_id)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def render_env(width: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAN", "GROFF", "LC_", "LANG")) and k not in ("PAGER", "LESS", "COLUMNS")
    }
    env.update(LC_ALL="C.UTF-8", MANWIDTH=str(width), MANPAGER="cat", PAGER="cat")
    return env


def clean_text(raw: str) -> str:
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _ANSI_RE.sub("", text)
    text = _OVERSTRIKE_RE.sub("", text)  # "X\bX" (bold), "_\bX" (underline)
    text = text.expandtabs(8)
    text = _CTRL_RE.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUN_RE.sub("\n\n", text)
    return text.strip("\n")


def cap_text(text: str, max_chars: int) -> str:
    """Cut to at most max_chars, at a line boundary when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    nl = cut.rfind("\n")
    cut = cut[:nl] if nl > 0 else text[:max_chars]
    return cut.rstrip()


def render(page: Page, env: dict[str, str]) -> tuple[str, str]:
    """Render one page with man-db; returns (clean text, groff stderr)."""
    res = subprocess.run(
        ["man", "-l", "-E", "UTF-8", "--nh", "--nj", page.path],
        capture_output=True,
        env=env,
        timeout=300,
        cwd="/",
    )
    raw = res.stdout.decode("utf-8", errors="replace")
    err = res.stderr.decode("utf-8", errors="replace")
    if res.returncode != 0 and not raw.strip():
        return "", err or f"man exited {res.returncode}"
    return clean_text(raw), err


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


class LangStream:
    """Pages of one language in seeded order; renders lazily and in batches."""

    def __init__(self, lang, pages, seed, pool, env, min_chars, max_chars, batch):
        self.lang = lang
        self.pages = list(pages)
        random.Random(f"{seed}:{lang}").shuffle(self.pages)
        self.pos = 0
        self.pool, self.env = pool, env
        self.min_chars, self.max_chars, self.batch = min_chars, max_chars, batch
        self.skipped_short = 0
        self.warnings: list[str] = []

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.pages)

    def take(self, k: int) -> list[dict]:
        rows: list[dict] = []
        while len(rows) < k and not self.exhausted:
            chunk = self.pages[self.pos : self.pos + max(self.batch, k - len(rows))]
            results = list(self.pool.map(lambda p: render(p, self.env), chunk))
            for page, (text, err) in zip(chunk, results, strict=False):
                if len(rows) == k:
                    break  # rest of the batch is unused; resume from here next time
                self.pos += 1
                if err.strip():
                    self.warnings.append(f"{page.doc_id}: {err.strip().splitlines()[0]}")
                if len(text) < self.min_chars:
                    self.skipped_short += 1
                    continue
                text = cap_text(text, self.max_chars)
                rows.append(
                    {
                        "doc_id": page.doc_id,
                        "text": text,
                        "lang": page.lang,
                        "source": f"debian-manpages/{page.package}",
                        "section": page.section,
                        "chars": len(text),
                    }
                )
        return rows


def quotas(n_docs: int, en_frac: float, others: list[str]) -> dict[str, int]:
    n_en = round(n_docs * en_frac)
    rest = n_docs - n_en
    q = {"en": n_en}
    for i, lang in enumerate(others):
        q[lang] = rest // len(others) + (1 if i < rest % len(others) else 0)
    return q


def sample(streams: dict[str, LangStream], want: dict[str, int]) -> list[dict]:
    rows: list[dict] = []
    short = 0
    for lang, k in want.items():
        got = streams[lang].take(k)
        rows.extend(got)
        short += k - len(got)
    # A language that ran out of pages: spread the shortfall round-robin over
    # the other non-English languages, then English as a last resort.
    others = [lang for lang in want if lang != "en"]
    while short:
        open_others = [lang for lang in others if not streams[lang].exhausted]
        if not open_others:
            break
        for lang in open_others:
            if not short:
                break
            got = streams[lang].take(1)
            rows.extend(got)
            short -= len(got)
    if short:
        rows.extend(streams["en"].take(short))
    return rows


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def write_parquet(rows: list[dict], out: Path, metadata: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("doc_id", pa.string()),
            ("text", pa.string()),
            ("lang", pa.string()),
            ("source", pa.string()),
            ("section", pa.int32()),
            ("chars", pa.int32()),
        ],
        metadata={k.encode(): v.encode() for k, v in metadata.items()},
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", compression_level=9)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Parquet file to write")
    ap.add_argument("--docs", type=int, default=2000, help="number of documents")
    ap.add_argument("--seed", type=int, default=0, help="sampling/shuffle seed")
    ap.add_argument("--en-frac", type=float, default=0.65, help="share of English docs")
    ap.add_argument("--min-chars", type=int, default=300, help="skip shorter pages")
    ap.add_argument("--max-chars", type=int, default=16000, help="cap per text (line boundary)")
    ap.add_argument("--width", type=int, default=80, help="MANWIDTH used for rendering")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel renders")
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get install missing packages (fail instead)",
    )
    args = ap.parse_args(argv)
    if args.docs <= 0 or not 0.0 <= args.en_frac <= 1.0:
        ap.error("--docs must be > 0 and --en-frac within [0, 1]")

    packages = all_packages()
    ensure_installed(packages, allow_install=not args.no_install)
    for tool in ("man", "groff", "col"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH (install man-db / groff-base)")
    versions = package_versions(packages)

    env = render_env(args.width)
    others = [lang for lang in LANGS if lang != "en"]
    want = quotas(args.docs, args.en_frac, others)
    pool_sizes: dict[str, int] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        streams = {}
        for lang in LANGS:
            pages = list_pages(lang)
            pool_sizes[lang] = len(pages)
            streams[lang] = LangStream(
                lang,
                pages,
                args.seed,
                pool,
                env,
                args.min_chars,
                args.max_chars,
                batch=max(8, 4 * args.jobs),
            )
        rows = sample(streams, want)

    rows.sort(key=lambda r: r["doc_id"])
    random.Random(args.seed).shuffle(rows)
    assert len({r["doc_id"] for r in rows}) == len(rows), "duplicate doc_id"

    metadata = {
        "streamflow.builder": "pipelines/data/build_sample.py",
        "streamflow.args": json.dumps(
            {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("out", "jobs", "no_install")
            },
            sort_keys=True,
        ),
        "streamflow.packages": json.dumps(versions, sort_keys=True),
    }
    write_parquet(rows, args.out, metadata)

    # ---- summary ----
    by_lang = Counter(r["lang"] for r in rows)
    chars = Counter()
    for r in rows:
        chars[r["lang"]] += r["chars"]
    total_chars = sum(chars.values())
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(rows)} docs, {total_chars / 1e6:.2f} M chars)"
    )
    print(f"{'lang':<6} {'docs':>5} {'share':>6} {'chars':>10} {'pool':>5} {'short':>5} {'warn':>4}")
    for lang in LANGS:
        s = streams[lang]
        print(
            f"{lang:<6} {by_lang[lang]:>5} {by_lang[lang] / max(1, len(rows)):>6.1%} "
            f"{chars[lang]:>10} {pool_sizes[lang]:>5} {s.skipped_short:>5} "
            f"{len(s.warnings):>4}"
        )
    capped = sum(1 for r in rows if r["chars"] >= args.max_chars - args.width)
    print(
        f"capped near {args.max_chars} chars: {capped} docs; "
        f"sections: {dict(sorted(Counter(r['section'] for r in rows).items()))}"
    )
    print("packages:", " ".join(f"{p}={v}" for p, v in versions.items()))
    warnings = [w for s in streams.values() for w in s.warnings]
    if warnings:
        print(f"groff/man warnings on {len(warnings)} pages (first 5):")
        for w in warnings[:5]:
            print("  ", w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
