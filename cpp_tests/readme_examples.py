#!/usr/bin/env python3
"""Compiles the README's C and C++ examples against the headers.

usage: readme_examples.py README INCLUDE_DIR CC CXX

CC and CXX are each one argument: the compiler and what precedes the source
on its command line (a launcher, CMake's CMAKE_C_COMPILER_ARG1, the build's
flags), split as a shell would.

Each ```c and ```cpp block of the README becomes the body of a function of
its own, after a prelude that declares what the examples leave to the host
(its ids and rows, a stats service, fb303, an HTTP reply); #include lines
move to the top. The compile is -fsyntax-only: an example must name the API
as it is, which is what drifts.
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile

C_PRELUDE = """\
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

#include "kvzch.h"

/* What the examples leave to the host. */
extern const int64_t *ids;
extern size_t n;
extern const void *rows;
extern void *out;
extern uint32_t publish_time;
extern void *lib; /* from dlopen */
typedef kvzch_status (*kvzch_get_api_fn)(uint32_t, kvzch_api_v1 *, size_t);
"""

CXX_PRELUDE = """\
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kvzch.hpp"

// What the examples leave to the host, fb303's signatures among them.
namespace folly {
struct StringPiece {
  StringPiece(const char* data, std::size_t size);
};
}  // namespace folly
namespace facebook::fb303 {
enum ExportType { SUM };
struct ServiceData {
  void addStatValue(folly::StringPiece key, std::int64_t value, ExportType type);
};
extern ServiceData* fbData;
}  // namespace facebook::fb303
extern std::vector<std::int64_t> ids;
extern std::vector<std::byte> rows;
extern std::vector<std::byte> out;
extern std::uint32_t publish_time;
struct StatsService {
  void add_stat_value(std::string_view name, std::int64_t value);
};
extern StatsService stats_service;
extern kvzch::Library lib;
extern std::vector<std::string> table_names;
extern std::map<std::string, kvzch::Cache> caches;
void respond(int status, std::string_view content_type, const std::string& body);
struct StatsdClient {
  void send(const std::string& packet);
};
extern StatsdClient statsd;
"""

# Unused variables are what examples are made of. Clang before 13 does not
# know -Wunused-but-set-variable, hence -Wno-unknown-warning-option.
WARNINGS = ["-Wall", "-Werror", "-Wno-unknown-warning-option", "-Wno-unused-variable",
            "-Wno-unused-but-set-variable"]

# Info strings of fenced blocks that this script compiles, and others of C's
# family that it would silently pass over.
CHECKED = {"c", "cpp"}
UNCHECKED_C_FAMILY = {"c++", "cc", "cxx", "h", "hpp", "c99", "c11", "objc"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(\S*)")


def blocks(readme):
    """{info string: [(line of the first body line, body)]} for every fenced
    block; raises ValueError for a block this script cannot check and would
    otherwise skip (an indented or unclosed one, or another C spelling)."""
    found = {}
    lines = readme.splitlines()
    at = 0
    while at < len(lines):
        opening = FENCE.match(lines[at])
        if not opening:
            at += 1
            continue
        indent, fence, info = opening.groups()
        info = info.lower()
        close = next((i for i in range(at + 1, len(lines))
                      if lines[i].strip().startswith(fence[0] * len(fence))
                      and not lines[i].strip().strip(fence[0])), None)
        if close is None:
            raise ValueError(f"line {at + 1}: a fenced block that never closes")
        if info in UNCHECKED_C_FAMILY or (info in CHECKED and indent):
            raise ValueError(f"line {at + 1}: a ```{info} block this script does not compile")
        if info in CHECKED:
            found.setdefault(info, []).append((at + 2, "\n".join(lines[at + 1:close]) + "\n"))
        at = close + 1
    return found


def source(prelude, examples, readme_path):
    """One translation unit: the prelude, the examples' includes, then each
    example as a function, with #line directives pointing into the README."""
    quoted_path = readme_path.replace("\\", "\\\\").replace('"', '\\"')
    includes = []
    functions = []
    for number, (line, body) in enumerate(examples):
        kept = []
        for text in body.splitlines():
            if text.startswith("#include"):
                includes.append(text)
                kept.append("")  # keeps the #line numbering
            else:
                kept.append(text)
        functions.append(
            f"void readme_example_{number}(void);\n"
            f"void readme_example_{number}(void) {{\n"
            f'#line {line} "{quoted_path}"\n' + "\n".join(kept) + "\n}\n"
        )
    return prelude + "\n".join(includes) + "\n\n" + "\n".join(functions)


def main():
    readme_path, include_dir, cc, cxx = sys.argv[1:5]
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    try:
        fenced = blocks(readme)
    except ValueError as e:
        print(f"{readme_path}: {e}")
        sys.exit(1)
    failed = False
    # The standards the project builds its C and C++ with.
    for language, compiler, standard, prelude, suffix in [
        ("c", cc, "-std=c99", C_PRELUDE, ".c"),
        ("cpp", cxx, "-std=c++17", CXX_PRELUDE, ".cpp"),
    ]:
        examples = fenced.get(language, [])
        if not examples:
            print(f"{readme_path} has no ```{language} example: nothing would be checked")
            failed = True
            continue
        with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False) as f:
            f.write(source(prelude, examples, readme_path))
            path = f.name
        try:
            command = [*shlex.split(compiler), standard, "-fsyntax-only", *WARNINGS,
                       "-I" + include_dir, path]
            result = subprocess.run(command, capture_output=True, text=True)
        finally:
            os.unlink(path)
        print(f"{len(examples)} ```{language} examples: {'compile' if result.returncode == 0 else 'FAIL'}")
        if result.returncode != 0:
            print(result.stdout + result.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
