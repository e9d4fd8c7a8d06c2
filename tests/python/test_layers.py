"""The include layering of src/ (docs/ARCHITECTURE.md): a file may include headers of its own
folder and of lower layers only, never of a higher layer or of a sibling on the same layer
(so forward/ never includes decode/, and the reverse). Reads the sources; runs no binary."""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")
LAYERS = [["common"], ["io"], ["model"], ["parallel", "h5", "gpu"], ["decode", "forward"], ["map"],
          ["job"], ["cli"]]
RANK = {d: i for i, ds in enumerate(LAYERS) for d in ds}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    bad, files, edges = [], 0, 0
    top = sorted(d for d in os.listdir(SRC) if os.path.isdir(os.path.join(SRC, d)))
    unknown = [d for d in top if d not in RANK]
    if unknown:
        bad.append(f"folders of src/ with no layer: {unknown} (add them to LAYERS and docs/ARCHITECTURE.md)")
    for root, _, names in os.walk(SRC):
        for n in names:
            if not n.endswith((".h", ".cpp", ".cu", ".cuh")):
                continue
            path = os.path.join(root, n)
            rel = os.path.relpath(path, SRC)
            own = rel.split(os.sep)[0]
            if own not in RANK:
                continue
            files += 1
            for inc in INCLUDE.findall(open(path, encoding="utf-8").read()):
                other = inc.split("/")[0]
                if other not in RANK:
                    if "/" in inc and os.path.exists(os.path.join(SRC, inc)):
                        bad.append(f"{rel}: includes {inc}, in a folder with no layer")
                    continue
                edges += 1
                if other != own and RANK[other] >= RANK[own]:
                    bad.append(f"src/{rel} (layer {RANK[own]}, {own}) includes {inc} (layer {RANK[other]})")
    if bad:
        print("test_layers: FAILED\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)
    print(f"test_layers: {files} files, {edges} includes between folders of src/, all downward "
          f"({' -> '.join('/'.join(ds) for ds in LAYERS)})")


if __name__ == "__main__":
    main()
