"""`cmake --install` and the prefix alone. Installs the build tree this test came from (FI_BUILD_DIR)
into a temporary prefix and moves the prefix elsewhere; no installed byte (nor any file inside the
wheel) may name the source tree, the build tree or the prefix it was installed to. Then, with the
source and build trees hidden (a private mount namespace with an empty tmpfs over each, where
`unshare` works; else only said), from the moved prefix: `--version`, `demo-model` (its tokenizer
found beside the binary; a lone copy of the binary says where it looked), a 2-rank decode whose
map records the same build as `--version`, decode.sbatch and forward.sbatch finding the binary on
PATH or in FLASHINTERP (srun stood in for by a script), the analysis scripts run in place from
share/flashinterp/analysis, and the package pip-installed (--no-build-isolation --no-deps, from a
copy of that source and from the installed wheel) into a venv made with --system-site-packages,
whose commands flashinterp-show, -search, -compare and -report read the map.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

TOOLS = ("show", "search", "compare", "report", "export", "serve")
# Environment that would point the installed binary or Python back at the trees.
DROP_ENV = ("FLASHINTERP", "FI_BIN", "FI_SOURCE_DIR", "FI_BUILD_DIR", "FI_TOKENIZER_DIR",
            "FLASHINTERP_TOKENIZER", "PYTHONPATH")
# Run by sh in the mount namespace: an empty read-only tmpfs over each directory before --, then
# the command after it.
HIDER = """while [ "$1" != -- ]; do mount -t tmpfs -o ro,size=64k fi-hidden "$1" || exit 97; shift; done
shift
exec "$@"
"""


def sh(cmd, timeout=120, env=None, cwd=None, ok=True):
    """Runs cmd; with ok, a non-zero exit fails the test with its output."""
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        t.fail(f"timed out after {timeout} s: {' '.join(cmd)}")
    if ok and p.returncode != 0:
        t.fail(f"exit {p.returncode}: {' '.join(cmd)}\n--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}")
    return p


def project_version():
    text = open(os.path.join(t.SOURCE_DIR, "CMakeLists.txt"), encoding="utf-8").read()
    m = re.search(r"project\(flashinterp VERSION ([0-9.]+)", text)
    t.check(m, "no project(flashinterp VERSION ...) in CMakeLists.txt")
    return m.group(1)


# ---- stage 1: install, move, grep -------------------------------------------------------------
def installed_texts(prefix):
    """(name relative to prefix, bytes) of every installed file and link target, and of every
    member of an installed wheel (a zip: its members are compressed)."""
    for root, dirs, files in os.walk(prefix):
        for n in dirs + files:
            path = os.path.join(root, n)
            rel = os.path.relpath(path, prefix)
            if os.path.islink(path):
                yield rel + " (link)", os.fsencode(os.readlink(path))
                continue
            if n not in files:
                continue
            with open(path, "rb") as f:
                yield rel, f.read()
            if n.endswith(".whl"):
                with zipfile.ZipFile(path) as z:
                    for member in z.namelist():
                        yield f"{rel}!{member}", z.read(member)


def grep_paths(prefix, forbidden):
    """Fails when an installed file holds one of the forbidden paths as a whole path (not followed
    by a character that would continue a file name). Returns the number of files read."""
    pats = [(p, re.compile(re.escape(os.fsencode(p)) + rb"(?![\w.+-])")) for p in forbidden]
    found, files = [], 0
    for name, data in installed_texts(prefix):
        files += 1
        for p, rx in pats:
            m = rx.search(data)
            if m:
                found.append(f"{name}: {p} in {data[max(0, m.start() - 40):m.end() + 40]!r}")
    t.check(not found, "installed files name the source, build or install path:\n  " + "\n  ".join(found[:20]))
    return files


def hidable(dirs, keep):
    """The directories to hide: existing, not inside another one hidden, holding none of keep."""
    out = []
    for d in sorted({os.path.realpath(d) for d in dirs}, key=len):
        if not os.path.isdir(d) or d == "/" or any(d.startswith(o + os.sep) for o in out):
            continue
        if any(os.path.realpath(k) == d or os.path.realpath(k).startswith(d + os.sep) for k in keep):
            print(f"  not hiding {d}: it holds something the run needs")
            continue
        out.append(d)
    return out


def check_tree(prefix, version, build):
    need = ["bin/flashinterp", "share/flashinterp/tokenizer/tokenizer.json", "share/doc/flashinterp/README.md",
            "share/doc/flashinterp/docs/MAP_FORMAT.md", "share/doc/flashinterp/docs/ARCHITECTURE.md",
            "share/flashinterp/slurm/README.md", "share/flashinterp/analysis/pyproject.toml",
            "share/flashinterp/analysis/flashinterp_map.py"]
    need += [f"share/flashinterp/slurm/{s}.sbatch" for s in ("decode", "decode-multinode", "forward")]
    runnable = ["bin/flashinterp"] + [f"share/flashinterp/analysis/{x}" for x in TOOLS]
    need += runnable + [f"share/flashinterp/analysis/flashinterp_analysis/{x}.py" for x in ("__init__",) + TOOLS]
    missing = [n for n in need if not os.path.isfile(os.path.join(prefix, n))]
    t.check(not missing, f"not installed: {missing}")
    t.check(all(os.access(os.path.join(prefix, x), os.X_OK) for x in runnable), f"not all executable: {runnable}")
    py = os.path.join(prefix, "share", "flashinterp", "python")
    wheels = sorted(os.listdir(py)) if os.path.isdir(py) else []
    built = os.path.isdir(os.path.join(build, "python"))  # the build makes one when pip, setuptools, wheel are there
    t.check(wheels == ([f"flashinterp_analysis-{version}-py3-none-any.whl"] if built else []),
            f"share/flashinterp/python holds {wheels}")


def stage1():
    build = os.path.realpath(os.environ.get("FI_BUILD_DIR") or os.path.dirname(os.path.dirname(t.binary())))
    t.check(os.path.exists(os.path.join(build, "cmake_install.cmake")), f"{build}: not a configured build tree")
    cmake = os.environ.get("FI_CMAKE") or shutil.which("cmake") or "cmake"
    version = project_version()
    with t.tempdir() as tmp:
        first = os.path.join(tmp, "installed-here")
        sh([cmake, "--install", build, "--prefix", first])
        prefix = os.path.join(tmp, "apps", "flashinterp", version)
        os.makedirs(os.path.dirname(prefix))
        os.rename(first, prefix)  # relocated: the install path is gone too
        check_tree(prefix, version, build)

        tok_cache = os.path.join(t.SOURCE_DIR, ".cache", "tokenizer")
        trees = [t.SOURCE_DIR, build, tok_cache]
        forbidden = sorted({p for d in trees for p in (os.path.abspath(d), os.path.realpath(d))} | {first})
        files = grep_paths(prefix, forbidden)
        print(f"  installed {files} files (wheel members included) under {os.path.relpath(prefix, tmp)}; "
              f"none names {', '.join(forbidden)}")

        # Stage 2 runs from copies of this file and fi_testlib, with the trees hidden.
        stage, work = os.path.join(tmp, "stage"), os.path.join(tmp, "work")
        os.makedirs(stage)
        os.makedirs(work)
        for n in ("test_install.py", "fi_testlib.py"):
            shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), n), stage)
        hider = os.path.join(stage, "hide.sh")
        with open(hider, "w") as f:
            f.write(HIDER)
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env["FI_SOURCE_DIR"] = stage  # fi_testlib's SOURCE_DIR: nothing of the source there
        mpirun = shutil.which(t.mpiexec()) or t.mpiexec()
        hide = hidable(trees, keep=[tmp, sys.executable, mpirun, cmake])
        stage2 = [sys.executable, os.path.join(stage, "test_install.py"), "--stage2", prefix, work, version,
                  mpirun]
        unshare = ["unshare", "-m", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare.insert(1, "-r")  # a user namespace, where the kernel allows one
        probe = None
        if hide and shutil.which("unshare"):
            probe = subprocess.run(unshare + ["sh", hider, stage, "--", "true"], capture_output=True, text=True)
        if probe is not None and probe.returncode == 0:
            print(f"  hidden for the run from the prefix (private mount namespace): {', '.join(hide)}")
            cmd = unshare + ["sh", hider, *hide, "--", *stage2, *hide]
        else:
            why = "no unshare" if probe is None else (probe.stderr.strip().splitlines() or ["?"])[-1]
            print(f"  NOTE: the source and build trees stay visible ({why}); the grep above is the check")
            cmd = stage2
        p = sh(cmd, timeout=600, env=env, cwd=work, ok=False)
        sys.stdout.write(p.stdout)
        t.check(p.returncode == 0, f"from the prefix: exit {p.returncode}\n{p.stderr}")


# ---- stage 2: from the prefix alone ------------------------------------------------------------
def stage2(prefix, work, version, mpirun, hidden):
    for d in hidden:
        t.check(not os.listdir(d), f"{d} should be hidden here")
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    fi = os.path.join(prefix, "bin", "flashinterp")
    share = os.path.join(prefix, "share", "flashinterp")

    lines = sh([fi, "--version"], env=env).stdout.strip().splitlines()
    t.check(len(lines) == 3 and lines[0] == f"flashinterp {version}" and re.fullmatch(r"git \S+", lines[1])
            and re.match(r"backends: cpu \(OpenBLAS\)(, cuda \(archs .*\))?, hdf5 \S+ (parallel|serial)", lines[2]),
            f"--version: {lines}")
    print(f"  --version: {' | '.join(lines)}")

    model = os.path.join(work, "model")
    sh([fi, "demo-model", "--out", model, "--layers", "2", "--hidden", "64", "--intermediate", "128", "--seed", "5"],
       env=env)
    lone = os.path.join(work, "lone", "bin", "flashinterp")  # a copy with no share/ beside it
    os.makedirs(os.path.dirname(lone))
    shutil.copy(fi, lone)
    p = sh([lone, "demo-model", "--out", os.path.join(work, "m2")], env=env, ok=False)
    want = os.path.join(os.path.realpath(work), "lone", "share", "flashinterp", "tokenizer", "tokenizer.json")
    t.check(t.one_line_error(p, want, "--tokenizer", "FLASHINTERP_TOKENIZER"),
            f"a lone binary's demo-model: exit {p.returncode}, {p.stderr!r} (should name {want})")
    env_tok = dict(env, FLASHINTERP_TOKENIZER=os.path.join(share, "tokenizer", "tokenizer.json"))
    sh([lone, "demo-model", "--out", os.path.join(work, "m2"), "--layers", "1", "--hidden", "64",
        "--intermediate", "128"], env=env_tok)

    out = os.path.join(work, "map.h5")
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    sh([mpirun, *flags, "-np", "2", fi, "decode", "--model", model, "--out", out, "--backend", "cpu",
        "--matrices", "up,gate,down", "--token-index", "8", "--quiet"], env=env, timeout=300)
    import h5py
    with h5py.File(out, "r") as f:
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    t.check(a.get("build") == "; ".join(lines), f"the map's build {a.get('build')!r} vs --version {lines}")
    t.check(a.get("tool_version") == version and int(a.get("complete", 0)) == 1, f"map attrs {a}")
    print(f"  2-rank decode from the prefix: build = {a['build']!r}")

    slurm_checks(prefix, work, model, env)
    analysis_checks(share, work, out, t.load_planted(model), version, env)
    t.check(not any("__pycache__" in d for d, _, _ in os.walk(prefix)), "running from the prefix wrote __pycache__")


def slurm_checks(prefix, work, model, env):
    """decode.sbatch and forward.sbatch from the prefix, srun replaced by a script that drops its
    options and runs the command once (a singleton MPI job); without a binary, each script stops."""
    slurm = os.path.join(prefix, "share", "flashinterp", "slurm")
    fake = os.path.join(work, "fakebin")
    os.makedirs(fake)
    with open(os.path.join(fake, "srun"), "w") as f:
        f.write('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    os.chmod(os.path.join(fake, "srun"), 0o755)
    base = dict(env, FI_MPI="pmix", SLURM_JOB_NUM_NODES="1", SLURM_NTASKS_PER_NODE="1",
                SLURM_CPUS_PER_TASK="1", MODEL=model, FI_ARGS="--backend cpu --quiet --token-index 0")
    bare_path = fake + os.pathsep + "/usr/bin:/bin"  # no flashinterp on it
    for s in ("decode", "decode-multinode", "forward"):
        p = sh(["bash", os.path.join(slurm, f"{s}.sbatch"), "generate"], ok=False, cwd=work,
               env=dict(base, PATH=bare_path, OUT=os.path.join(work, "none.h5")))
        t.check(p.returncode == 2 and "set FLASHINTERP" in p.stderr,
                f"{s}.sbatch without a binary: exit {p.returncode}, {p.stderr!r}")
    out = os.path.join(work, "slurm.h5")
    p = sh(["bash", os.path.join(slurm, "decode.sbatch")], cwd=work, timeout=300,
           env=dict(base, PATH=os.path.join(prefix, "bin") + os.pathsep + bare_path, OUT=out))
    t.check(os.path.exists(out) and "launch: srun" in p.stdout, f"decode.sbatch: {p.stdout}")
    p = sh(["bash", os.path.join(slurm, "forward.sbatch"), "generate", "--model", model, "--prompt", "A dog",
            "--max-new-tokens", "2", "--backend", "cpu"], cwd=work, timeout=300,
           env=dict(base, PATH=bare_path, FLASHINTERP=os.path.join(prefix, "bin", "flashinterp")))
    t.check(p.stdout.strip(), "forward.sbatch generate printed nothing")
    print("  slurm/decode.sbatch (flashinterp from PATH) and forward.sbatch (from FLASHINTERP) ran from the prefix")


def analysis_checks(share, work, out, planted, version, env):
    """share/flashinterp/analysis/show in place, then the package in a venv and its commands."""
    dog = next(x for x in planted if x["token"] == " dog")
    show_args = [out, "--layer", dog["layer"], "--neuron", dog["neuron"], "--matrix", dog["matrix"], "--json"]

    def check_show(cmd, how):
        p = sh(cmd + show_args, env=env, cwd=work, ok=False)
        t.check(p.returncode == 0, f"{how}: exit {p.returncode}\n{p.stderr}")
        top = json.loads(p.stdout)["top"][0]["token"]
        t.check(top == " dog", f"{how}: top token {top!r}, planted ' dog'")

    check_show(["/usr/bin/python3", os.path.join(share, "analysis", "show")], "share/flashinterp/analysis/show")

    venv = os.path.join(work, "venv")
    sh(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv], env=env)
    pip = [os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-deps", "--no-index",
           "--disable-pip-version-check", "--quiet"]
    src = os.path.join(work, "analysis-src")  # setuptools builds in the source tree: a writable copy
    shutil.copytree(os.path.join(share, "analysis"), src)
    sh([*pip, src], env=env)
    py_dir = os.path.join(share, "python")
    wheels = [os.path.join(py_dir, w) for w in os.listdir(py_dir)] if os.path.isdir(py_dir) else []
    for w in wheels:  # the installed wheel, as a user without write access to the prefix installs it
        sh([*pip, "--force-reinstall", w], env=env)
    where = sh([os.path.join(venv, "bin", "python"), "-c",
                "import flashinterp_map, flashinterp_analysis.show, importlib.metadata as m; "
                "print(flashinterp_map.__file__); print(m.version('flashinterp-analysis'))"], env=env, cwd=work)
    module, v = where.stdout.split()
    t.check(module.startswith(venv + os.sep) and v == version, f"the venv's package: {module}, version {v}")

    def command(name, *args):
        return json.loads(sh([os.path.join(venv, "bin", name), *args, "--json"], env=env, cwd=work).stdout)

    check_show([os.path.join(venv, "bin", "flashinterp-show")], "flashinterp-show")
    first = command("flashinterp-search", out, "dog")["results"][0]
    t.check((first["layer"], first["neuron"]) == (dog["layer"], dog["neuron"]), f"flashinterp-search dog: {first}")
    same = command("flashinterp-compare", out, out)["per_layer"]["same_top1_share"]
    t.check(same and all(s == 1.0 for s in same), f"flashinterp-compare of a map with itself: {same}")
    rep = os.path.join(work, "report")
    sh([os.path.join(venv, "bin", "flashinterp-report"), out, "--out", rep], env=env, cwd=work)
    t.check(os.path.getsize(os.path.join(rep, "index.html")) > 1000, "flashinterp-report wrote no page")
    print(f"  share/flashinterp/analysis/show in place; a venv (--system-site-packages) with the package from "
          f"{'a copy of its source and from the wheel' if wheels else 'a copy of its source'}: "
          f"flashinterp-show, -search, -compare, -report read the map")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--stage2":
        _, _, prefix_, work_, version_, mpirun_, *hidden_ = sys.argv
        t.main(lambda: stage2(prefix_, work_, version_, mpirun_, hidden_))
    t.main(stage1)
