//! The configuration files of the proxies under test, generated for each workload.
//!
//! Both proxies get the same shape: one listener, four echo backends, client address and port
//! as the flow key hashed consistently over the backends, no health checks, 10 s idle
//! timeouts, and the workload's reply and request counts.

use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// How the proxies end a flow, which is what distinguishes the workloads on the proxy side.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Teardown {
    /// Flows end by idle timeout only (throughput, latency, memory).
    Idle,
    /// A flow closes after one reply per request: udplb `responses = 1`, nginx
    /// `proxy_responses 1` (DNS-like).
    ResponsesOne,
    /// Every datagram is its own flow: udplb `requests = 1` + `responses = 1`, nginx
    /// `proxy_requests 1; proxy_responses 1`.
    OneShot,
}

/// An extra udplb target: its name and the `[process]` settings it adds, each written into the
/// file verbatim as `KEY = VALUE` (so a string value carries its TOML quotes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdplbVariant {
    pub name: String,
    pub process_settings: Vec<(String, String)>,
}

impl UdplbVariant {
    /// Parses `NAME:KEY=VALUE,KEY=VALUE`, such as `udplb-2w:workers=2` or
    /// `udplb-perflow:upstream_mode="per_flow"`. Values may not contain commas.
    pub fn parse(text: &str) -> Result<UdplbVariant> {
        let Some((name, settings)) = text.split_once(':') else {
            bail!("expected NAME:KEY=VALUE[,KEY=VALUE...], got {text:?}");
        };
        let name_ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok || matches!(name, "udplb" | "nginx" | "direct") {
            bail!("variant name {name:?} must be new and made of A-Z a-z 0-9 - _ .");
        }
        let mut process_settings = Vec::new();
        for setting in settings.split(',').filter(|s| !s.trim().is_empty()) {
            let Some((key, value)) = setting.split_once('=') else {
                bail!("setting {setting:?} of variant {name:?} has no `=`");
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty()
                || value.is_empty()
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                bail!("setting {setting:?} of variant {name:?} must be KEY=VALUE with a bare TOML key");
            }
            process_settings.push((key.to_string(), value.to_string()));
        }
        Ok(UdplbVariant { name: name.to_string(), process_settings })
    }
}

/// A udplb configuration: one listener, one cluster of `backends` (Maglev over client address
/// and port, the default affinity), no health probes so that probes do not add traffic.
pub fn udplb_toml(
    listen: SocketAddr,
    backends: &[SocketAddr],
    teardown: Teardown,
    max_flows: u32,
    process_settings: &[(String, String)],
) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "[process]\nmax_flows = {max_flows}\nlog_format = \"human\"");
    for (key, value) in process_settings {
        let _ = writeln!(text, "{key} = {value}");
    }
    let _ = writeln!(text, "\n[listeners.bench]\naddress = \"{listen}\"\ncluster = \"echo\"");
    let _ = writeln!(text, "\n[clusters.echo]\nalgorithm = \"maglev\"");
    let _ = writeln!(text, "idle_timeout = {{ front = \"10s\", back = \"10s\" }}");
    match teardown {
        Teardown::Idle => {}
        Teardown::ResponsesOne => text.push_str("responses = 1\n"),
        Teardown::OneShot => text.push_str("requests = 1\nresponses = 1\n"),
    }
    text.push_str("backends = [\n");
    for (index, backend) in backends.iter().enumerate() {
        let _ = writeln!(text, "  {{ id = \"echo-{}\", address = \"{backend}\" }},", index + 1);
    }
    text.push_str("]\n\n[clusters.echo.health]\nmode = \"off\"\n");
    text
}

/// An nginx configuration with one worker and the stream module proxying `listen` to
/// `backends`. The hash includes `$remote_port`: with `$remote_addr` alone every loopback
/// client would land on one backend. `stream_module` is the dynamic module to load when the
/// stream module is not built in (Debian's `libnginx-mod-stream`).
pub fn nginx_conf(
    listen: SocketAddr,
    backends: &[SocketAddr],
    teardown: Teardown,
    prefix: &Path,
    stream_module: Option<&Path>,
) -> String {
    let mut text = String::new();
    if let Some(module) = stream_module {
        let _ = writeln!(text, "load_module {};", module.display());
    }
    let _ = writeln!(
        text,
        "worker_processes 1;\ndaemon off;\nerror_log stderr warn;\npid {}/nginx.pid;\n\
         worker_rlimit_nofile 300000;\nevents {{\n    worker_connections 200000;\n}}",
        prefix.display()
    );
    text.push_str("stream {\n    upstream be {\n        hash $remote_addr$remote_port consistent;\n");
    for backend in backends {
        let _ = writeln!(text, "        server {backend};");
    }
    text.push_str("    }\n");
    let _ = writeln!(text, "    server {{\n        listen {listen} udp reuseport;");
    text.push_str("        proxy_pass be;\n        proxy_timeout 10s;\n        access_log off;\n");
    match teardown {
        Teardown::Idle => {}
        Teardown::ResponsesOne => text.push_str("        proxy_responses 1;\n"),
        Teardown::OneShot => text.push_str("        proxy_responses 1;\n        proxy_requests 1;\n"),
    }
    text.push_str("    }\n}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<SocketAddr> {
        (1..=4).map(|n| format!("127.0.0.1:1700{n}").parse().unwrap()).collect()
    }

    #[test]
    fn udplb_default_target_adds_no_process_setting() {
        let listen = "127.0.0.1:17100".parse().unwrap();
        let text = udplb_toml(listen, &backends(), Teardown::Idle, 300_000, &[]);
        assert!(
            text.starts_with("[process]\nmax_flows = 300000\nlog_format = \"human\"\n\n[listeners.bench]")
        );
        assert!(text.contains("address = \"127.0.0.1:17100\""));
        assert!(text.contains("{ id = \"echo-4\", address = \"127.0.0.1:17004\" }"));
        assert!(text.contains("algorithm = \"maglev\""));
        assert!(text.contains("[clusters.echo.health]\nmode = \"off\""));
        assert!(!text.contains("responses") && !text.contains("requests"));
    }

    #[test]
    fn udplb_teardowns_set_responses_and_requests() {
        let listen = "127.0.0.1:17100".parse().unwrap();
        let dns = udplb_toml(listen, &backends(), Teardown::ResponsesOne, 1, &[]);
        assert!(dns.contains("responses = 1\n") && !dns.contains("requests"));
        let oneshot = udplb_toml(listen, &backends(), Teardown::OneShot, 1, &[]);
        assert!(oneshot.contains("requests = 1\nresponses = 1\n"));
    }

    #[test]
    fn udplb_variant_settings_go_into_process() {
        let variant = UdplbVariant::parse("udplb-perflow:upstream_mode=\"per_flow\",workers=2").unwrap();
        assert_eq!(variant.name, "udplb-perflow");
        let listen = "127.0.0.1:17100".parse().unwrap();
        let text = udplb_toml(listen, &backends(), Teardown::Idle, 10, &variant.process_settings);
        let process = text.split("[listeners.bench]").next().unwrap();
        assert!(process.contains("upstream_mode = \"per_flow\"\nworkers = 2\n"));
    }

    #[test]
    fn bad_variants_are_rejected() {
        assert!(UdplbVariant::parse("no-colon").is_err());
        assert!(UdplbVariant::parse("udplb:workers=2").is_err());
        assert!(UdplbVariant::parse("x:workers").is_err());
        assert!(UdplbVariant::parse("x:bad key=1").is_err());
        assert_eq!(UdplbVariant::parse("x:").unwrap().process_settings, vec![]);
    }

    #[test]
    fn nginx_conf_has_one_worker_hash_on_address_and_port_and_the_teardown() {
        let listen = "127.0.0.1:17200".parse().unwrap();
        let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        let text = nginx_conf(listen, &backends(), Teardown::OneShot, Path::new("/tmp/x"), Some(module));
        assert!(text.starts_with("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"));
        assert!(text.contains("worker_processes 1;") && text.contains("daemon off;"));
        assert!(text.contains("pid /tmp/x/nginx.pid;"));
        assert!(text.contains("hash $remote_addr$remote_port consistent;"));
        assert!(text.contains("server 127.0.0.1:17003;"));
        assert!(text.contains("listen 127.0.0.1:17200 udp reuseport;"));
        assert!(text.contains("proxy_responses 1;\n        proxy_requests 1;"));
        assert!(text.contains("access_log off;"));
        let plain = nginx_conf(listen, &backends(), Teardown::Idle, Path::new("/tmp/x"), None);
        assert!(!plain.contains("load_module") && !plain.contains("proxy_responses"));
    }
}
