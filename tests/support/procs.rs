//! Child processes that a test starts, and the per-test directory their files live in.
//!
//! * [`TestDir`]: a fresh directory under `target/tmp/` for one test (rendered configs, logs).
//!   It is removed when the test passes and **kept** when it fails (its path is printed), or always
//!   with `RISKGATE_TEST_KEEP_DIRS=1`.
//! * [`Proc`]: a child started in **its own process group**, stdout/stderr going to
//!   `<name>.stdout.log` / `<name>.stderr.log` in the test dir. Dropping it (also while a failing
//!   test unwinds) sends SIGTERM to the whole group, waits up to `RISKGATE_TEST_KILL_TIMEOUT_MS`
//!   (default 3000), then SIGKILLs the group; when the test is failing it first prints the tails of
//!   both logs. Where `setpriv` (util-linux) exists the child also gets SIGTERM if the test process
//!   itself dies abruptly (killed, aborted), via `--pdeathsig`.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::wait::{env_ms, poll_interval};

/// Grace period between SIGTERM and SIGKILL (`RISKGATE_TEST_KILL_TIMEOUT_MS`, default 3000 ms).
pub fn kill_timeout() -> Duration {
    env_ms("RISKGATE_TEST_KILL_TIMEOUT_MS", 3_000)
}

/// Lines of each log printed when a test fails (`RISKGATE_TEST_LOG_TAIL_LINES`, default 40).
fn tail_lines() -> usize {
    std::env::var("RISKGATE_TEST_LOG_TAIL_LINES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(40)
}

fn keep_all_dirs() -> bool {
    std::env::var("RISKGATE_TEST_KEEP_DIRS").is_ok_and(|v| v == "1")
}

/// A directory for one test's files, under Cargo's `target/tmp` for integration tests.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// A new empty directory whose name starts with `name` (use the test's name).
    pub fn new(name: &str) -> TestDir {
        // Cargo sets CARGO_TARGET_TMPDIR for tests and benches; the demo example uses target/tmp.
        let root = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp"));
        std::fs::create_dir_all(&root).expect("create target/tmp for test dirs");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(&root)
            .expect("create the per-test directory");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/<name>`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || keep_all_dirs() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test files kept in {}", kept.display());
            }
        }
        // otherwise the TempDir removes itself
    }
}

/// A running child process (and its process group), stopped on drop.
pub struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` as `name` (used for the log file names and messages) in its own process group,
    /// with stdin closed and stdout/stderr captured in `dir`.
    pub fn spawn(dir: &TestDir, name: &str, cmd: Command) -> Proc {
        let stdout = dir.join(&format!("{name}.stdout.log"));
        let stderr = dir.join(&format!("{name}.stderr.log"));
        let out = File::create(&stdout).expect("create the stdout log file");
        let err = File::create(&stderr).expect("create the stderr log file");

        let mut cmd = with_parent_death_signal(cmd);
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            exit: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited (never blocks).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Prints the last lines of its stdout and stderr to the test's stderr.
    pub fn dump_logs(&self) {
        let n = tail_lines();
        for (stream, path) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            eprintln!(
                "----- {} {stream} (last {} of {} lines, {}) -----",
                self.name,
                lines.len() - from,
                lines.len(),
                path.display()
            );
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
        eprintln!("----- end of {} logs -----", self.name);
    }

    /// Stops the process group: SIGTERM, then SIGKILL after [`kill_timeout`]. Returns how the
    /// main process ended. Calling it again is harmless.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let group = Pid::from_raw(i32::try_from(self.child.id()).ok()?);
        if self.exited().is_none() {
            signal_group(group, Signal::SIGTERM);
            let deadline = Instant::now() + kill_timeout();
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(poll_interval().min(Duration::from_millis(20)));
            }
        }
        // SIGKILL whatever is left in the group (children of the main process too)
        signal_group(group, Signal::SIGKILL);
        if self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
        self.exit
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(status) = self.exited() {
                eprintln!("{} had already exited: {status}", self.name);
            }
            self.dump_logs();
        }
        self.stop();
    }
}

fn signal_group(group: Pid, signal: Signal) {
    match killpg(group, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => eprintln!("killpg({group}, {signal}) failed: {e}"),
    }
}

/// Wraps `cmd` in `setpriv --pdeathsig TERM` when setpriv is available, so the child is signalled
/// even if the test process is killed without unwinding. (The signal follows the *thread* that
/// spawned the child, which lives as long as the test's runtime.)
fn with_parent_death_signal(cmd: Command) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if !Path::new(SETPRIV).exists() {
        return cmd;
    }
    let mut wrapped = Command::new(SETPRIV);
    wrapped
        .arg("--pdeathsig")
        .arg("TERM")
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}
