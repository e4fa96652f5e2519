//! Compiles the sentinel (`src/sentinel.c`), the small program that leads every task's
//! process group, into `OUT_DIR/furrow-sentinel`; the agent embeds it (see
//! `src/sentinel.rs`). Statically linked where the C library allows it, so starting it
//! runs no dynamic loader.

use std::path::PathBuf;

fn main() {
    let source = "src/sentinel.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("furrow-sentinel");
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    let mut failures = Vec::new();
    for linking in [&["-static"][..], &[][..]] {
        let output = compiler
            .to_command()
            .args(["-O2", "-Wall", "-Wextra", "-s"])
            .args(linking)
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
        "cannot compile the task sentinel {source} with {:?} (building the agent needs a C compiler and the C library's headers):\n{}",
        compiler.path(),
        failures.join("\n")
    );
}
