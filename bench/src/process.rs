//! Children that cannot outlive the driver: each runs in its own process group (so that
//! nginx's workers go with their master), gets SIGKILL if the driver dies
//! (`PR_SET_PDEATHSIG`), is killed when its guard drops, and is killed by the driver's
//! SIGINT/SIGTERM handler. A bounded wait kills a child that overstays its deadline.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Process groups alive right now, for the signal handler.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills every live child group on SIGINT, SIGTERM or SIGHUP, then exits.
pub fn install_cleanup_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            kill_all_groups();
            eprintln!("udplb-compare: signal {signal}: children killed");
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

fn kill_all_groups() {
    let groups = LIVE_GROUPS.lock().map(|groups| groups.clone()).unwrap_or_default();
    for group in groups {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// A child process (and its process group) killed when dropped.
pub struct Guarded {
    pub name: String,
    child: Child,
}

impl Guarded {
    pub fn spawn(name: &str, command: &mut Command) -> Result<Guarded> {
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid, kill... here only prctl).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command.process_group(0);
        let child = command.spawn().with_context(|| format!("start {name}: {command:?}"))?;
        LIVE_GROUPS.lock().expect("registry").push(child.id() as i32);
        Ok(Guarded { name: name.to_string(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// `Some(status)` if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for a normal exit, then kills the group.
    pub fn wait_bounded(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} overran its {:?} bound and was killed", self.name, limit);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, a short grace, then SIGKILL.
    pub fn stop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn kill(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: kill has no memory effects. The group may hold processes the leader left.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.retain(|&g| g != group);
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Raises RLIMIT_NOFILE (soft and hard) to at least `wanted`: the hard limit can be raised
/// by root up to `fs.nr_open`; otherwise the soft limit goes as high as the hard one allows.
/// Returns the soft limit now in force.
pub fn raise_nofile(wanted: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur >= wanted {
            return limit.rlim_cur;
        }
        let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max.max(wanted) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let soft_only = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft_only);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Kills a process group if it is still running when the bound passes; dropping it (or
/// calling `disarm`) before then does nothing to the group.
pub struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    pub fn arm(group: u32, limit: Duration) -> Watchdog {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !flag.load(Ordering::Relaxed) {
                eprintln!("udplb-compare: a child overran its {limit:?} bound; killing it");
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(-(group as i32), libc::SIGKILL) };
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
