//! An agent as a process of its own, for the tests that signal and kill agent processes
//! (`tests/agent_crash.rs`, which finds it through `CARGO_BIN_EXE_furrow-test-agent`).
//!
//! It starts like the `furrow` binary's agent: `main` calls `furrow_agent::run` before
//! any other thread exists, so the agent's signals reach its signalfd. It takes no part
//! in a release: the `furrow` binary is the agent's real entry point.
//!
//! Usage: `furrow-test-agent MASTER STATE_DIR [CONFIG_FILE]`. Exits 0 after a clean stop,
//! 2 when the agent fails, 64 on bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(master), Some(state), config_file, None) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        eprintln!("usage: furrow-test-agent MASTER STATE_DIR [CONFIG_FILE]");
        return ExitCode::from(64);
    };
    let Ok(master) = master.into_string() else {
        eprintln!("furrow-test-agent: MASTER is not UTF-8");
        return ExitCode::from(64);
    };
    let mut config = furrow_agent::AgentConfig::new(master, PathBuf::from(state));
    config.config_file = config_file.map(PathBuf::from);
    match furrow_agent::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agent failed: {error}");
            ExitCode::from(2)
        }
    }
}
