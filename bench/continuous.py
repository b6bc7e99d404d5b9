#!/usr/bin/env python3
"""Continuous protection figures: recovery point (RPO) over scripted edits,
and the cost of watching a large tree while idle.

RPO: `tidemark watch` runs with its default settings (3 s quiet, 20 s
longest delay) on a small home folder, against a local folder repository
and against a Tidemark server on loopback. The script makes N edits (new
files and edits of existing ones, each of a distinct size) at random
intervals, while an editor saves one file every second for 30 s and a
"build" writes 2,000 files; afterwards `tidemark versions` tells, for each
edit, the time of the first snapshot holding it. RPO = that time minus the
time the edit was written.

Idle: `tidemark watch` on a tree of F files (100 per folder); after its
first full backup, CPU time and resident memory are read from /proc over
an idle period. With --agent, `tidemark agent` instead: the service the
tray app runs (scheduler, continuous protection, events), set up with
that tree and a local folder repository.

Usage: bench/continuous.py [--edits 200] [--gap 1.0] [--files 200000]
                           [--idle 60] [--work DIR] [--skip-server] [--skip-idle]
                           [--skip-rpo] [--agent]
The binary is $TIDEMARK_BIN, by default the release build (make build).
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tidemark/target"))
TM = os.environ.get("TIDEMARK_BIN", os.path.join(TARGET, "release", "tidemark"))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))]


class Watch:
    """`tidemark watch --json` in the background, its snapshot lines collected."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(
            [TM, "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            v = json.loads(line)
            if "type" in v:  # `tidemark agent`: only finished backups count
                if v["type"] != "backup_finished":
                    continue
                v = {"duration_ms": None, **v["done"]}
            with self.cond:
                self.lines.append(v)
                self.cond.notify_all()

    def wait_for(self, n, timeout):
        end = time.time() + timeout
        with self.cond:
            while len(self.lines) < n:
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                    sys.exit(f"tidemark watch made {len(self.lines)} of {n} snapshots in time {err}")
                self.cond.wait(left)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(work, env):
    out = open(os.path.join(work, "server.out"), "w")
    proc = subprocess.Popen(
        [TM, "--json", "server", "--data", os.path.join(work, "srv"), "--listen", "127.0.0.1:0"],
        stdout=out, stderr=subprocess.DEVNULL, env=env,
    )
    for _ in range(200):
        try:
            info = json.load(open(os.path.join(work, "server.out")))
            break
        except (json.JSONDecodeError, OSError):
            time.sleep(0.1)
    else:
        sys.exit("the server did not start")
    subprocess.run([TM, "enroll", info["listening"], info["admin_code"]], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return proc, info["listening"]


def rpo(mode, work, edits, gap, seed):
    work = os.path.join(work, f"rpo-{mode}")
    shutil.rmtree(work, ignore_errors=True)
    data = os.path.join(work, "home")
    rng = random.Random(seed)
    # A small home folder: 40 folders of 50 files, and the files edits change.
    for d in range(40):
        for f in range(50):
            write(os.path.join(data, f"folder{d}", f"file{f}.txt"), os.urandom(rng.randint(100, 5000)))
    for i in range(edits):
        write(os.path.join(data, "existing", f"doc{i}.txt"), b"x")
    env = dict(os.environ, TIDEMARK_PASSWORD="bench", HOME=os.path.join(work, "userhome"),
               TIDEMARK_DEVICE_SECRET_FILE=os.path.join(work, "device.secret"))
    os.makedirs(env["HOME"], exist_ok=True)
    server = None
    if mode == "server":
        server, repo = start_server(work, env)
    else:
        repo = os.path.join(work, "repo")
        subprocess.run([TM, "--repo", repo, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    common = ["--repo", repo, "--cache-dir", os.path.join(work, "cache")]
    watch = Watch([*common, "watch", data], env)
    watch.wait_for(1, 300)

    stop = threading.Event()

    def editor():
        # An editor autosaving one document every second for 30 s.
        for i in range(30):
            if stop.is_set():
                return
            write(os.path.join(data, "folder0", "autosaved.txt"), f"autosave {i}\n".encode() * 50)
            time.sleep(1)

    def build():
        # A build writing 2,000 object files as fast as it can.
        for i in range(2000):
            write(os.path.join(data, "project", "build", f"obj{i // 100}", f"o{i}.o"), os.urandom(512))

    made = []
    for i in range(edits):
        if i == edits // 4:
            threading.Thread(target=editor, daemon=True).start()
        if i == edits // 2:
            threading.Thread(target=build, daemon=True).start()
        if i % 2 == 0:
            path = os.path.join(data, f"folder{i % 40}", f"new{i}.txt")
        else:
            path = os.path.join(data, "existing", f"doc{i}.txt")
        size = 1000 + i
        write(path, bytes([65 + i % 26]) * size)
        made.append((path, size, time.time()))
        time.sleep(rng.expovariate(1 / gap))
    last = made[-1][2]
    # Everything should be in by a minute after the last edit.
    while time.time() < last + 60:
        time.sleep(1)
    stop.set()
    watch.stop()
    rpos, missing = [], []
    for path, size, t in made:
        out = subprocess.run([TM, "--json", *common, "versions", path], env=env, capture_output=True, text=True)
        versions = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        seen = [v for v in versions if v["size"] == size]
        if not seen:
            missing.append(path)
            continue
        first = datetime.fromisoformat(seen[0]["first_seen"].replace("Z", "+00:00")).timestamp()
        rpos.append(first - t)
    if server:
        server.terminate()
    snapshots = len(watch.lines)
    return {
        "mode": mode, "edits": edits, "rpos": rpos, "missing": missing,
        "snapshots": snapshots, "kinds": [line["kind"] for line in watch.lines],
    }


def idle(work, files, seconds, agent=False):
    work = os.path.join(work, "idle")
    shutil.rmtree(work, ignore_errors=True)
    data = os.path.join(work, "home")
    t0 = time.time()
    per = 100
    for i in range(files):
        d = i // per
        write(os.path.join(data, f"a{d // 100}", f"b{d % 100}", f"f{i % per}.txt"), b"%d\n" % i)
    made = time.time() - t0
    home = os.path.join(work, "userhome")
    env = dict(os.environ, TIDEMARK_PASSWORD="bench", HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
               XDG_DATA_HOME=os.path.join(home, ".local/share"), XDG_CACHE_HOME=os.path.join(home, ".cache"))
    repo = os.path.join(work, "repo")
    subprocess.run([TM, "--repo", repo, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    if agent:
        # The settings the app's setup would save: this tree, this folder,
        # continuous protection on, everything else default.
        write(os.path.join(home, ".config", "tidemark", "agent.toml"),
              f'folders = ["{data}"]\nexcludes = []\ncontinuous = true\n\n'
              f'[destination]\nkind = "folder"\npath = "{repo}"\n'.encode())
        # The setup's last step: "back up now".
        write(os.path.join(home, ".local", "share", "tidemark", "agent-state.json"), b'{"requested": true}')
        watch = Watch(["agent"], env)
    else:
        watch = Watch(["--repo", repo, "--cache-dir", os.path.join(work, "cache"), "watch", data], env)
    started = time.time()
    watch.wait_for(1, 1800)
    first = time.time() - started
    pid = watch.proc.pid
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    def status(key):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    time.sleep(5)  # let the first backup's threads wind down
    c0, w0 = cpu(), time.time()
    time.sleep(seconds)
    c1, w1 = cpu(), time.time()
    rss, hwm = status("VmRSS"), status("VmHWM")
    # One change after the idle period, for reference.
    write(os.path.join(data, "a0", "b0", "f0.txt"), b"changed after idling")
    t_change = time.time()
    watch.wait_for(2, 120)
    after = time.time() - t_change
    incremental_ms = watch.lines[1]["duration_ms"]
    watch.stop()
    return {
        "files": files, "dirs": files // per, "made_s": made, "first_s": first,
        "cpu_pct": (c1 - c0) / (w1 - w0) * 100, "idle_s": w1 - w0, "rss_mib": rss, "hwm_mib": hwm,
        "change_to_snapshot_s": after, "incremental_ms": incremental_ms,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--gap", type=float, default=1.0, help="mean seconds between edits")
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--idle", type=int, default=60, help="seconds of idle watching measured")
    ap.add_argument("--work", default="/tmp/tidemark-bench-continuous")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--skip-rpo", action="store_true")
    ap.add_argument("--agent", action="store_true", help="measure idle watching on `tidemark agent`")
    a = ap.parse_args()
    if not os.access(TM, os.X_OK):
        sys.exit(f"{TM} is missing: build the release binary first (make build)")
    os.makedirs(a.work, exist_ok=True)
    results = [] if a.skip_rpo else [rpo("local", a.work, a.edits, a.gap, a.seed)]
    if not a.skip_server and not a.skip_rpo:
        results.append(rpo("server", a.work, a.edits, a.gap, a.seed))
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" :\t")
    print(f"\nMachine: {os.cpu_count()} cores, {cpu}; {datetime.now():%Y-%m-%d %H:%M}\n")
    if results:
        print(f"RPO of {a.edits} scripted edits (mean gap {a.gap} s; an editor autosaving every second for 30 s "
              "and a build writing 2,000 files run meanwhile), `tidemark watch` with default settings:\n")
        print("| Destination | p50 | p95 | max | not protected | snapshots made |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        x = r["rpos"]
        print(f"| {'Local folder' if r['mode'] == 'local' else 'Server on loopback (HTTPS)'} | "
              f"{statistics.median(x):.1f} s | {pct(x, 95):.1f} s | {max(x):.1f} s | {len(r['missing'])} | "
              f"{r['snapshots']} ({r['kinds'].count('full')} full) |")
    if not a.skip_idle:
        i = idle(a.work, a.files, a.idle, a.agent)
        who = "`tidemark agent`" if a.agent else "`tidemark watch`"
        print(f"\n{who} idle, watching {i['files']:,} files in {i['dirs']:,} folders "
              f"(first full backup {i['first_s']:.0f} s):\n")
        print("| CPU while idle | RSS while idle | peak RSS (incl. first backup) | one change → snapshot | that backup |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        print(f"| {i['cpu_pct']:.2f} % over {i['idle_s']:.0f} s | {i['rss_mib']:.0f} MiB | {i['hwm_mib']:.0f} MiB | "
              f"{i['change_to_snapshot_s']:.1f} s | "
              f"{'–' if i['incremental_ms'] is None else str(i['incremental_ms']) + ' ms'} |")
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
