"""Reads `cargo metadata` on stdin; fails if a locked package that the build
needs asks for a newer Rust than kvzch's own rust-version, which README.md
gives as the toolchain the project needs."""
import json
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


packages = json.load(sys.stdin)["packages"]
ours = next(p for p in packages if p["name"] == "kvzch")["rust_version"]
newer = sorted(
    f"{p['name']} {p['version']} needs Rust {p['rust_version']}"
    for p in packages
    if p.get("rust_version") and version(p["rust_version"]) > version(ours)
)
if newer:
    print(f"Cargo.lock holds crates newer than kvzch's rust-version {ours}:", file=sys.stderr)
    for line in newer:
        print(f"  {line}", file=sys.stderr)
    print("pin an older version: cargo update -p <crate> --precise <version>", file=sys.stderr)
    sys.exit(1)
print(f"every locked crate builds with Rust {ours}")
