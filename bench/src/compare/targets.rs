//! The targets under test: the direct path to the echo backends, nginx with one worker, and
//! udplb (the default and any variants). Each proxy is started with a configuration for one
//! teardown, checked to answer, and measured through the pids whose CPU time it spends.

use crate::process::Guarded;
use crate::procfs;
use crate::proxy_config::{self, Teardown, UdplbVariant};
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a target is.
#[derive(Clone, Debug)]
pub enum TargetKind {
    Direct,
    Nginx,
    Udplb(UdplbVariant),
}

/// Where the proxies' binaries and files are.
#[derive(Clone, Debug)]
pub struct Environment {
    pub udplb_binary: PathBuf,
    pub nginx_binary: PathBuf,
    pub nginx_stream_module: Option<PathBuf>,
    pub temp_dir: PathBuf,
    pub backends: Vec<SocketAddr>,
    pub max_flows: u32,
}

/// A started target.
pub struct Running {
    pub name: String,
    /// Where the generator sends (the four backends for the direct path).
    pub addresses: Vec<SocketAddr>,
    process: Option<Guarded>,
    log: Option<PathBuf>,
}

impl TargetKind {
    pub fn name(&self) -> &str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Nginx => "nginx",
            TargetKind::Udplb(variant) => &variant.name,
        }
    }

    /// Starts the target for `teardown`, listening on `listen`, and waits until it answers.
    pub fn start(
        &self,
        environment: &Environment,
        teardown: Teardown,
        listen: SocketAddr,
    ) -> Result<Running> {
        let name = self.name().to_string();
        let files = environment.temp_dir.join(format!("{name}-{teardown:?}").to_lowercase());
        let (process, log) = match self {
            TargetKind::Direct => {
                return Ok(Running {
                    name,
                    addresses: environment.backends.clone(),
                    process: None,
                    log: None,
                });
            }
            TargetKind::Nginx => start_nginx(environment, teardown, listen, &files)?,
            TargetKind::Udplb(variant) => start_udplb(environment, variant, teardown, listen, &files)?,
        };
        let mut running = Running { name, addresses: vec![listen], process: Some(process), log: Some(log) };
        running.wait_until_answering()?;
        Ok(running)
    }
}

fn start_udplb(
    environment: &Environment,
    variant: &UdplbVariant,
    teardown: Teardown,
    listen: SocketAddr,
    files: &Path,
) -> Result<(Guarded, PathBuf)> {
    std::fs::create_dir_all(files)?;
    let config = files.join("udplb.toml");
    let text = proxy_config::udplb_toml(
        listen,
        &environment.backends,
        teardown,
        environment.max_flows,
        &variant.process_settings,
    );
    std::fs::write(&config, text)?;
    let log = files.join("udplb.log");
    let mut command = Command::new(&environment.udplb_binary);
    command
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("UDPLB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    Ok((Guarded::spawn(&variant.name, &mut command)?, log))
}

fn start_nginx(
    environment: &Environment,
    teardown: Teardown,
    listen: SocketAddr,
    files: &Path,
) -> Result<(Guarded, PathBuf)> {
    std::fs::create_dir_all(files.join("logs"))?;
    let config = files.join("nginx.conf");
    let text = proxy_config::nginx_conf(
        listen,
        &environment.backends,
        teardown,
        files,
        environment.nginx_stream_module.as_deref(),
    );
    std::fs::write(&config, text)?;
    let log = files.join("nginx.log");
    let mut command = Command::new(&environment.nginx_binary);
    // -e stderr: the compiled-in error log (/var/log/nginx) is opened before the file is read.
    command
        .arg("-p")
        .arg(files)
        .arg("-c")
        .arg(&config)
        .arg("-e")
        .arg("stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    Ok((Guarded::spawn("nginx", &mut command)?, log))
}

impl Running {
    /// The pids whose CPU time is the proxy's: udplb's process (all its threads), nginx's
    /// master and workers. Empty for the direct path.
    pub fn measured_pids(&self) -> Vec<u32> {
        let Some(process) = &self.process else { return Vec::new() };
        let mut pids = vec![process.pid()];
        pids.extend(procfs::children_of(process.pid()));
        pids
    }

    /// The process whose memory the memory run reads: nginx's worker, udplb itself.
    pub fn memory_pid(&self) -> Option<u32> {
        let process = self.process.as_ref()?;
        Some(procfs::children_of(process.pid()).first().copied().unwrap_or(process.pid()))
    }

    /// Sends a probe from a fresh socket until one is echoed back (10 s at most).
    fn wait_until_answering(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut payload = vec![0u8; 64];
        crate::wire::Header { flow: u32::MAX, sequence: 0, sent_ns: 0 }.emit(&mut payload);
        let mut reply = [0u8; 128];
        while Instant::now() < deadline {
            if let Some(status) = self.process.as_mut().and_then(|process| process.exited()) {
                bail!("{} exited at start ({status}); its log:\n{}", self.name, self.log_tail());
            }
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            socket.send_to(&payload, self.addresses[0])?;
            if socket.recv_from(&mut reply).is_ok_and(|(length, _)| reply[..length] == payload[..]) {
                return Ok(());
            }
        }
        bail!("{} did not answer within 10 s; its log:\n{}", self.name, self.log_tail())
    }

    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn stop(mut self) {
        if let Some(process) = self.process.as_mut() {
            process.stop();
        }
    }
}

/// Finds the udplb binary beside this one (both are built into target/release).
pub fn default_udplb_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    Ok(exe.with_file_name("udplb"))
}
