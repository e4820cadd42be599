#!/usr/bin/env python3
"""The programs ci/scale-out runs inside its network namespaces, and its analysis.

  backend   UDP servers, one socket per backend, that keep a session per client flow: each
            reply names the backend, the balancer instance the request came through (the
            datagram's source address) and how many requests this backend has seen in that
            session. A session that restarts on another backend starts counting at 1 again.
  client    FLOWS client sockets (one source port each, so one ECMP hash and one balancer
            flow each) send a request every PERIOD milliseconds to the VIP, each with its
            flow number and sequence number; records every request and its reply (or none)
            to a CSV file. Bounded by --seconds and --max-requests; SIGTERM ends it early.
  analyze   Reads the records and the events file ci/scale-out wrote, and prints the figures
            of each phase (spread, drain, join, kill); exits 1 if a target is missed.

Only the standard library; traffic only to the addresses given on the command line.
"""

import argparse
import collections
import csv
import json
import selectors
import signal
import socket
import sys
import time


def now_us():
    return time.time_ns() // 1000


# --- backend ----------------------------------------------------------------------------------


def backend(args):
    """One socket per NAME=ADDRESS:PORT; answers until --seconds have passed or SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    selector = selectors.DefaultSelector()
    sessions = {}
    for spec in args.listen:
        name, address = spec.split("=", 1)
        host, port = address.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, int(port)))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, name)
        sessions[name] = collections.Counter()
    print(f"scale-out backend: ready ({' '.join(args.listen)})", flush=True)
    deadline = time.monotonic() + args.seconds
    while not stop and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            name = key.data
            for _ in range(64):
                try:
                    data, peer = key.fileobj.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                text = data.decode("ascii", "replace")
                # "FLOW SEQ" from the client; anything else (health probes) gets a plain answer.
                parts = text.split()
                if len(parts) == 2 and parts[0].isdigit():
                    sessions[name][parts[0]] += 1
                    count = sessions[name][parts[0]]
                else:
                    count = 0
                reply = f"{name} {peer[0]} {count} {text}".encode()
                try:
                    key.fileobj.sendto(reply, peer)
                except OSError:
                    pass
    print("scale-out backend: stopped", flush=True)


# --- client -----------------------------------------------------------------------------------


def client(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))
    selector = selectors.DefaultSelector()
    flows = []
    for flow in range(args.flows):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((args.source, 0))
        # Connected: only the VIP's replies are taken, as a QUIC client's socket would.
        sock.connect(target)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, flow)
        flows.append(sock)
    ports = [sock.getsockname()[1] for sock in flows]
    period = args.period_ms / 1000.0
    start = time.monotonic()
    # Flow f sends at start + f/FLOWS periods + k periods: spread evenly over each period.
    next_send = [start + period * flow / args.flows for flow in range(args.flows)]
    seq = [0] * args.flows
    pending = {}  # (flow, seq) -> index in records
    records = []  # [flow, port, seq, sent_us, answered_us, backend, instance, session]
    deadline = start + args.seconds
    loss_timeout = args.loss_timeout_ms / 1000.0
    print(f"scale-out client: {args.flows} flows to {args.target}, one request each every "
          f"{args.period_ms} ms", flush=True)
    while not stop and time.monotonic() < deadline and len(records) < args.max_requests:
        now = time.monotonic()
        due = min(next_send)
        if due <= now:
            for flow in range(args.flows):
                if next_send[flow] <= now:
                    seq[flow] += 1
                    sent = now_us()
                    try:
                        flows[flow].send(f"{flow} {seq[flow]}".encode())
                    except OSError:
                        pass  # ICMP unreachable from an earlier datagram: counted as lost
                    pending[(flow, seq[flow])] = len(records)
                    records.append([flow, ports[flow], seq[flow], sent, "", "", "", ""])
                    next_send[flow] += period
                    if next_send[flow] < now:
                        next_send[flow] = now + period
            continue
        for key, _ in selector.select(timeout=min(0.05, max(0.0, due - now))):
            for _ in range(16):
                try:
                    data = key.fileobj.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                answered = now_us()
                parts = data.decode("ascii", "replace").split()
                if len(parts) != 5:
                    continue
                name, instance, session, flow, number = parts
                index = pending.pop((int(flow), int(number)), None)
                if index is None:
                    continue  # a duplicate, or an answer to a request already written off
                record = records[index]
                if answered - record[3] > loss_timeout * 1e6:
                    continue
                record[4:8] = [answered, name, instance, session]
    # Let the last requests be answered.
    linger = time.monotonic() + loss_timeout
    while pending and time.monotonic() < linger:
        for key, _ in selector.select(timeout=0.05):
            try:
                data = key.fileobj.recv(2048)
            except OSError:
                continue
            answered = now_us()
            parts = data.decode("ascii", "replace").split()
            if len(parts) == 5:
                index = pending.pop((int(parts[3]), int(parts[4])), None)
                if index is not None and answered - records[index][3] <= loss_timeout * 1e6:
                    records[index][4:8] = [answered, parts[0], parts[1], parts[2]]
    with open(args.records, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["flow", "port", "seq", "sent_us", "answered_us", "backend", "instance", "session"])
        writer.writerows(records)
    answered = sum(1 for r in records if r[4] != "")
    print(f"scale-out client: sent {len(records)}, answered {answered}", flush=True)


# --- analysis ---------------------------------------------------------------------------------


class Record:
    __slots__ = ("flow", "seq", "sent", "answered", "backend", "instance", "session")

    def __init__(self, row, instances):
        self.flow = int(row["flow"])
        self.seq = int(row["seq"])
        self.sent = int(row["sent_us"])
        self.answered = int(row["answered_us"]) if row["answered_us"] else None
        self.backend = row["backend"] or None
        self.instance = instances.get(row["instance"], row["instance"]) if row["instance"] else None
        self.session = int(row["session"]) if row["session"] else None


def load_events(path):
    """Lines `EPOCH_US KIND INSTANCE STEP [VALUE]`, in order."""
    events = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4:
                events.append({"us": int(parts[0]), "kind": parts[1], "instance": parts[2],
                               "step": parts[3], "value": parts[4] if len(parts) > 4 else None})
    return events


def instance_at(records_by_flow, flow, before_us):
    """The instance of the flow's last answered request sent before `before_us`."""
    last = None
    for r in records_by_flow[flow]:
        if r.sent >= before_us:
            break
        if r.answered is not None:
            last = r
    return last


def pct(part, whole):
    return 100.0 * part / whole if whole else 0.0


def analyze(args):
    instances = dict(item.split("=", 1) for item in args.instances.split(","))
    with open(args.records) as f:
        records = [Record(row, instances) for row in csv.DictReader(f)]
    events = load_events(args.events)
    by_flow = collections.defaultdict(list)
    for r in records:
        by_flow[r.flow].append(r)
    for rows in by_flow.values():
        rows.sort(key=lambda r: r.seq)
    flows = sorted(by_flow)
    results = {"flows": len(flows), "requests": len(records), "phases": []}
    missed = []

    def mark(what, ok, detail):
        print(f"  {'ok  ' if ok else 'MISS'} {what}: {detail}")
        if not ok:
            missed.append(f"{what}: {detail}")

    # Phase boundaries: each action's first event starts it, the next action's first event
    # (or the end of the records) ends it.
    actions = []
    for e in events:
        if e["step"] == "start":
            actions.append({"kind": e["kind"], "instance": e["instance"], "start": e["us"], "steps": {},
                            "values": {}})
        if actions and e["kind"] == actions[-1]["kind"] and e["instance"] == actions[-1]["instance"]:
            actions[-1]["steps"][e["step"]] = e["us"]
            if e["value"] is not None:
                actions[-1]["values"][e["step"]] = e["value"]
    end_us = max(r.sent for r in records) + 1
    for i, action in enumerate(actions):
        action["end"] = actions[i + 1]["start"] if i + 1 < len(actions) else end_us

    first_start = actions[0]["start"] if actions else end_us
    print(f"{len(flows)} flows, {len(records)} requests")

    # Spread: where each flow was just before the first action.
    placed = [instance_at(by_flow, f, first_start) for f in flows]
    counts = collections.Counter(r.instance for r in placed if r)
    backends = collections.Counter(r.backend for r in placed if r)
    spread = {name: counts.get(name, 0) for name in sorted(set(instances.values()))}
    print("spread (before the first action): instances " +
          ", ".join(f"{k} {v} ({pct(v, len(flows)):.0f} %)" for k, v in spread.items()) +
          "; backends " + ", ".join(f"{k} {v}" for k, v in sorted(backends.items())))
    results["spread"] = {"instances": spread, "backends": dict(sorted(backends.items()))}
    lowest = min(spread.values()) if spread else 0
    mark("spread", lowest >= 0.2 * len(flows),
         f"every instance carries at least 20 % of the flows (least: {pct(lowest, len(flows)):.0f} %)")

    # Over the whole run: a flow never changes backend, and its session never restarts.
    backend_changes = 0
    session_restarts = 0
    for f in flows:
        seen_backend = None
        last_session = 0
        for r in by_flow[f]:
            if r.answered is None:
                continue
            if seen_backend is not None and r.backend != seen_backend:
                backend_changes += 1
            seen_backend = r.backend
            if r.session is not None and r.session <= last_session:
                session_restarts += 1
            last_session = r.session or last_session
    results["backend_changes"] = backend_changes
    results["session_restarts"] = session_restarts

    for action in actions:
        kind, victim, start, stop = action["kind"], action["instance"], action["start"], action["end"]
        steps = action["steps"]
        window = [r for r in records if start <= r.sent < stop]
        lost = [r for r in window if r.answered is None]
        phase = {"kind": kind, "instance": victim, "requests": len(window), "lost": len(lost)}

        def ms(step, since="start"):
            if step in steps and since in steps:
                return (steps[step] - steps[since]) / 1000.0
            return None

        before = {f: instance_at(by_flow, f, start) for f in flows}
        after = {f: instance_at(by_flow, f, stop) for f in flows}
        if kind == "drain":
            withdraw_to_converged = ms("converged")
            stopped = ms("stopped", "converged")
            on_victim = [f for f in flows if before[f] and before[f].instance == victim]
            moved_same = sum(1 for f in on_victim if after[f] and after[f].instance != victim
                             and after[f].backend == before[f].backend)
            phase.update(withdraw_to_converged_ms=withdraw_to_converged, converged_to_stopped_ms=stopped,
                         victim_flows=len(on_victim), victim_flows_moved_same_backend=moved_same)
            print(f"drain {victim}: withdrawn, router converged in {withdraw_to_converged:.0f} ms, "
                  f"udplb stopped {stopped:.0f} ms later; {len(on_victim)} flows were on {victim}")
            mark(f"drain {victim}: lost requests", len(lost) == 0,
                 f"{len(lost)} of {len(window)} requests sent during the drain unanswered")
            mark(f"drain {victim}: flows moved", moved_same == len(on_victim),
                 f"{moved_same} of {len(on_victim)} flows of {victim} continue on another instance, same backend")
        elif kind == "join":
            converged = ms("converged")
            both = [f for f in flows if before[f] and after[f]]
            changed_instance = [f for f in both if before[f].instance != after[f].instance]
            to_joiner = [f for f in changed_instance if after[f].instance == victim]
            changed_backend = [f for f in both if before[f].backend != after[f].backend]
            n = len(set(instances.values()))
            share = len(changed_instance) / len(both) if both else 0.0
            phase.update(start_to_converged_ms=converged, flows=len(both),
                         changed_instance=len(changed_instance), to_joiner=len(to_joiner),
                         changed_backend=len(changed_backend), share=share, ideal=1.0 / n,
                         position=steps_position(action))
            print(f"join {victim}: started, announced and in the router's route after {converged:.0f} ms; "
                  f"{len(changed_instance)} of {len(both)} flows changed instance ({100 * share:.1f} %; "
                  f"1/N = {100.0 / n:.1f} %), {len(to_joiner)} of them to {victim}; "
                  f"next hop position {phase['position']}")
            if args.join_target_positions is None or phase["position"] in args.join_target_positions:
                mark(f"join {victim}: flows moved", share <= 1.2 / n,
                     f"{100 * share:.1f} % changed instance (target <= 1.2 x 1/N = {120.0 / n:.1f} %)")
            else:
                print(f"  info {victim} joined at next hop position {phase['position']}: "
                      "the 1/N target applies to a join between the others (see docs/scale-out.md)")
            mark(f"join {victim}: backends", len(changed_backend) == 0,
                 f"{len(changed_backend)} flows changed backend")
            mark(f"join {victim}: lost requests", len(lost) == 0,
                 f"{len(lost)} of {len(window)} requests unanswered")
        elif kind == "kill":
            converged = ms("converged")
            victims = [f for f in flows if before[f] and before[f].instance == victim]
            others = [f for f in flows if before[f] and before[f].instance != victim]
            resumed = []
            same_backend = 0
            for f in victims:
                # A request sent in the moment between the event and the freeze may still
                # have been answered by the victim: the flow resumes with the first answer
                # through another instance.
                first = next((r for r in by_flow[f] if r.sent >= start and r.answered is not None
                              and r.instance != victim), None)
                if first is None:
                    continue
                resumed.append((first.answered - start) / 1000.0)
                if first.backend == before[f].backend:
                    same_backend += 1
            other_set = set(others)
            others_lost = [r for r in lost if r.flow in other_set]
            others_moved = [f for f in others if after[f] and after[f].instance != before[f].instance]
            resumed.sort()
            worst = resumed[-1] if resumed else None
            median = resumed[len(resumed) // 2] if resumed else None
            phase.update(kill_to_converged_ms=converged, victim_flows=len(victims),
                         resumed=len(resumed), resumed_same_backend=same_backend,
                         resume_median_ms=median, resume_max_ms=worst,
                         other_flows=len(others), other_lost=len(others_lost),
                         other_moved_instance=len(others_moved))
            print(f"kill {victim}: the router dropped it after {converged:.0f} ms (hold time "
                  f"{args.hold_time} s); {len(victims)} flows were on it, {len(resumed)} resumed "
                  f"(median {median:.0f} ms, max {worst:.0f} ms after the kill); "
                  f"{len(others_moved)} of the {len(others)} other flows changed instance")
            mark(f"kill {victim}: same backend", same_backend == len(victims) and len(victims) > 0,
                 f"{same_backend} of {len(victims)} flows resumed on another instance, same backend")
            mark(f"kill {victim}: within the hold time", worst is not None
                 and worst <= args.hold_time * 1000 + args.period_ms + 500,
                 f"last flow resumed {worst:.0f} ms after the kill (hold time {args.hold_time} s, "
                 f"+ one request period and 500 ms for the route change)")
            mark(f"kill {victim}: other flows", len(others_lost) == 0,
                 f"{len(others_lost)} requests of the other instances' flows unanswered")
        results["phases"].append(phase)

    mark("backends", backend_changes == 0,
         f"{backend_changes} answers came from another backend than the flow's earlier ones")
    mark("sessions", session_restarts == 0,
         f"{session_restarts} answers came from a session that had started over")
    if args.results:
        with open(args.results, "w") as out:
            json.dump(results, out, indent=1)
    if missed:
        print(f"{len(missed)} targets missed")
        return 1
    print("every target met")
    return 0


def steps_position(action):
    """The joiner's index among the router's next hops (written by ci/scale-out), or -1."""
    value = action["values"].get("converged")
    return int(value) if value is not None else -1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--listen", action="append", required=True, help="NAME=ADDRESS:PORT")
    b.add_argument("--seconds", type=float, default=600)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--source", required=True)
    c.add_argument("--flows", type=int, default=150)
    c.add_argument("--period-ms", type=int, default=200)
    c.add_argument("--loss-timeout-ms", type=int, default=1000)
    c.add_argument("--seconds", type=float, default=300)
    c.add_argument("--max-requests", type=int, default=2_000_000)
    c.add_argument("--records", required=True)
    a = sub.add_parser("analyze")
    a.add_argument("--records", required=True)
    a.add_argument("--events", required=True)
    a.add_argument("--instances", required=True, help="ADDRESS=NAME,...: which source is which instance")
    a.add_argument("--hold-time", type=float, required=True)
    a.add_argument("--period-ms", type=int, required=True)
    a.add_argument("--loss-timeout-ms", type=int, default=1000)
    a.add_argument("--join-target-positions", type=lambda s: [int(x) for x in s.split(",")], default=None)
    a.add_argument("--results")
    args = parser.parse_args()
    if args.command == "backend":
        backend(args)
    elif args.command == "client":
        client(args)
    else:
        sys.exit(analyze(args))


if __name__ == "__main__":
    main()
