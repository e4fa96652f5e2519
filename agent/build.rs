//! Compiles the spawner (`src/spawner.c`), the small program that starts every task of
//! an agent, into `OUT_DIR/furrow-spawner`; the agent embeds it (see `src/spawner.rs`). On x86-64 and AArch64 it is built without the C library, static
//! and with no start-up code of its own beyond `_start`; elsewhere it is linked with the
//! C library, statically where that works.

use std::path::PathBuf;

fn main() {
    let source = "src/spawner.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("furrow-spawner");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    let common = ["-O2", "-Wall", "-Wextra", "-s"];
    let attempts: &[&[&str]] = if arch == "x86_64" || arch == "aarch64" {
        &[&[
            "-static",
            "-nostdlib",
            "-nostartfiles",
            "-ffreestanding",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
        ]]
    } else {
        &[&["-static"], &[]]
    };
    let mut failures = Vec::new();
    for flags in attempts {
        let output = compiler
            .to_command()
            .args(common)
            .args(*flags)
            .arg("-o")
            .arg(&out)
            .arg(source)
            .output();
        match output {
            Ok(output) if output.status.success() => return,
            Ok(output) => failures.push(String::from_utf8_lossy(&output.stderr).into_owned()),
            Err(error) => failures.push(error.to_string()),
        }
    }
    panic!(
        "cannot compile the task spawner {source} with {:?} (building the agent needs a C compiler and the C library's headers):\n{}",
        compiler.path(),
        failures.join("\n")
    );
}
