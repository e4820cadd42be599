//! `udplb ctl check listener NAME`: the frontend state a BGP speaker's health check reads
//! (exit 0 serving, 1 not serving, 2 cannot tell, one line on stdout saying why), against a
//! running `udplb` on loopback. docs/scale-out.md describes how a speaker uses it.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    Backend, Balancer, UDP_HEALTH, ask, client, closed_port, free_udp_address, listener_and_pool, wait_for,
};

/// What `udplb ctl ARGS` exited with and printed on stdout.
struct Checked {
    code: Option<i32>,
    stdout: String,
}

fn ctl(socket: &Path, args: &[&str]) -> Checked {
    let output = Command::new(common::udplb())
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run udplb ctl");
    Checked { code: output.status.code(), stdout: String::from_utf8_lossy(&output.stdout).into_owned() }
}

fn check(balancer: &Balancer, extra: &[&str]) -> Checked {
    let mut args = vec!["check", "listener", "test"];
    args.extend_from_slice(extra);
    ctl(&balancer.socket, &args)
}

/// Polls `check` until it exits with `code`; the last result either way.
fn check_until(balancer: &Balancer, extra: &[&str], code: i32) -> Checked {
    let mut last = check(balancer, extra);
    wait_for(Duration::from_secs(10), || {
        last = check(balancer, extra);
        last.code == Some(code)
    });
    last
}

fn one_line(checked: &Checked) -> &str {
    let lines: Vec<&str> = checked.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {:?}", checked.stdout);
    lines[0]
}

fn two_echo_backends() -> (Backend, Backend, Balancer) {
    let (first, second) = (Backend::echo(), Backend::echo());
    let listen = free_udp_address();
    let balancer = Balancer::start(
        &listener_and_pool(listen, UDP_HEALTH, &[first.address, second.address]),
        listen,
        false,
    );
    assert!(balancer.wait_for_health("b0", "up") && balancer.wait_for_health("b1", "up"));
    (first, second, balancer)
}

#[test]
fn a_listener_with_healthy_backends_is_serving() {
    let (_first, _second, balancer) = two_echo_backends();
    let checked = check(&balancer, &[]);
    assert_eq!(checked.code, Some(0), "{}", checked.stdout);
    assert_eq!(one_line(&checked), "test: serving (cluster pool: 2 of 2 backends eligible)");

    let json = ctl(&balancer.socket, &["--json", "check", "listener", "test"]);
    assert_eq!(json.code, Some(0));
    let answer: serde_json::Value = serde_json::from_str(one_line(&json)).expect("one JSON object");
    assert_eq!(answer["listener"], "test");
    assert_eq!(answer["serving"], true);
    assert_eq!(answer["reason"], "cluster pool: 2 of 2 backends eligible");
}

#[test]
fn the_withdraw_file_fails_the_check_while_every_client_is_still_served() {
    let (_first, _second, balancer) = two_echo_backends();
    let file = std::env::temp_dir().join(format!("udplb-withdraw-test-{}", std::process::id()));
    let file_arg = file.to_str().unwrap().to_owned();
    let _ = std::fs::remove_file(&file);
    assert_eq!(check(&balancer, &["--withdraw-file", &file_arg]).code, Some(0), "no file: serving");

    std::fs::write(&file, b"").unwrap();
    let checked = check(&balancer, &["--withdraw-file", &file_arg]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert_eq!(one_line(&checked), format!("test: not serving: withdrawn ({file_arg} exists)"));
    // The point of withdrawing rather than draining: while the router converges it still sends
    // clients here, new ones included, and every one of them is served.
    for _ in 0..5 {
        assert!(ask(&client(), balancer.listen, b"new client").is_some(), "a new client is answered");
    }
    let listeners = balancer.ctl_json(&["show", "listeners"]);
    assert_eq!(listeners["listeners"][0]["draining"], false, "withdrawing does not drain");

    std::fs::remove_file(&file).unwrap();
    assert_eq!(check(&balancer, &["--withdraw-file", &file_arg]).code, Some(0), "file gone: serving again");
}

#[test]
fn a_draining_listener_is_not_serving_until_resumed() {
    let (_first, _second, balancer) = two_echo_backends();
    assert!(balancer.ctl(&["listener", "test", "drain"]).success);
    let checked = check(&balancer, &[]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(one_line(&checked).starts_with("test: not serving: draining ("), "{}", checked.stdout);
    assert!(balancer.ctl(&["listener", "test", "resume"]).success);
    let checked = check(&balancer, &[]);
    assert_eq!(checked.code, Some(0), "{}", checked.stdout);
}

#[test]
fn with_every_backend_down_the_check_follows_fail_open() {
    let (dead0, dead1) = (closed_port(), closed_port());
    let listen = free_udp_address();
    let body = |extra: &str| listener_and_pool(listen, &format!("{UDP_HEALTH}\n{extra}"), &[dead0, dead1]);
    let balancer = Balancer::launch(&body(""), listen);
    assert!(balancer.wait_for_health("b0", "down") && balancer.wait_for_health("b1", "down"));

    // fail_open (the default): new flows still go out, over the enabled backends.
    let checked = check_until(&balancer, &[], 0);
    assert_eq!(checked.code, Some(0), "{}", checked.stdout);
    assert_eq!(
        one_line(&checked),
        "test: serving (cluster pool: no backend eligible, failing open over 2 enabled)"
    );
    let strict = check(&balancer, &["--require-eligible"]);
    assert_eq!(strict.code, Some(1), "{}", strict.stdout);
    assert!(one_line(&strict).contains("--require-eligible"), "{}", strict.stdout);

    // fail_open = false: new flows are dropped, so the VIP must not be announced.
    balancer.write_config(&body("fail_open = false"));
    assert!(balancer.ctl(&["reload"]).success);
    let checked = check_until(&balancer, &[], 1);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert_eq!(
        one_line(&checked),
        "test: not serving: cluster pool: no backend eligible, and fail_open is off"
    );

    // Every backend disabled: nothing to fail open to either.
    balancer.write_config(&body(""));
    assert!(balancer.ctl(&["reload"]).success);
    assert!(balancer.ctl(&["backend", "pool", "b0", "disable"]).success);
    assert!(balancer.ctl(&["backend", "pool", "b1", "disable"]).success);
    let checked = check_until(&balancer, &[], 1);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        one_line(&checked).ends_with("no backend eligible, and none enabled to fail open to"),
        "{}",
        checked.stdout
    );
}

#[test]
fn before_the_first_health_check_result_the_listener_is_not_serving() {
    // A backend that takes probes and never answers: its first result is a timeout, 5 s away.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = free_udp_address();
    let health = "health = { mode = \"udp\", udp_payload = \"probe\", interval = \"10s\", timeout = \"5s\", rise = 1, fall = 1, jitter = 0 }";
    let balancer =
        Balancer::launch(&listener_and_pool(listen, health, &[silent.local_addr().unwrap()]), listen);
    let checked = check(&balancer, &[]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert_eq!(
        one_line(&checked),
        "test: not serving: cluster pool: no health check result yet (state unknown)"
    );
}

#[test]
fn an_unknown_listener_is_not_serving_and_the_known_ones_are_named() {
    let (_first, _second, balancer) = two_echo_backends();
    let checked = ctl(&balancer.socket, &["check", "listener", "nope"]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert_eq!(one_line(&checked), "nope: not serving: no listener named nope (listeners: test)");
}

#[test]
fn when_udplb_cannot_be_asked_the_check_exits_2() {
    let missing = std::env::temp_dir().join(format!("udplb-no-such-socket-{}.sock", std::process::id()));
    let checked = ctl(&missing, &["check", "listener", "test"]);
    assert_eq!(checked.code, Some(2), "{}", checked.stdout);
    assert!(one_line(&checked).starts_with("test: unknown: "), "{}", checked.stdout);
    let json = ctl(&missing, &["--json", "check", "listener", "test"]);
    assert_eq!(json.code, Some(2));
    let answer: serde_json::Value = serde_json::from_str(one_line(&json)).expect("one JSON object");
    assert_eq!(answer["serving"], serde_json::Value::Null);

    // A configuration file that names no socket: 2 as well (1 would claim udplb answered).
    let config = std::env::temp_dir().join(format!("udplb-check-no-socket-{}.toml", std::process::id()));
    std::fs::write(&config, "[listeners.test]\naddress = \"127.0.0.1:9\"\ncluster = \"pool\"\n").unwrap();
    let status = Command::new(common::udplb())
        .args(["ctl", "-c"])
        .arg(&config)
        .args(["check", "listener", "test"])
        .output()
        .expect("run udplb ctl");
    std::fs::remove_file(&config).unwrap();
    assert_eq!(status.status.code(), Some(2));

    // The withdraw file is obeyed even when udplb cannot be asked.
    let file = std::env::temp_dir().join(format!("udplb-withdraw-nosocket-{}", std::process::id()));
    std::fs::write(&file, b"").unwrap();
    let checked = ctl(&missing, &["check", "listener", "test", "--withdraw-file", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
}
