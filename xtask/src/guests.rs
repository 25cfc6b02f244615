//! `cargo xtask build-guests`: the sample projections and policies (`samples/`, built
//! against `sdk-guest/`) as `wasm32-unknown-unknown` modules.
//!
//! Guests have their own workspace (a host `cargo build --workspace` must never try to
//! link them natively) and their own target directory, so a guest build never
//! invalidates the host's build cache and vice versa.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The only target guests are built for: no WASI, so the host can refuse every import
/// that is not Kimberlite's own.
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// Builds every sample guest in release mode and returns the paths of the `.wasm` files,
/// `<root>/target/guests/wasm32-unknown-unknown/release/<crate_name>.wasm`, in the order
/// of the workspace's members.
pub fn build_guests(workspace_root: &Path) -> Result<Vec<PathBuf>, String> {
    let manifest = workspace_root.join("samples").join("Cargo.toml");
    let target_dir = workspace_root.join("target").join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // The target dir of a surrounding build (the host's) must not leak in.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|error| format!("could not run {cargo:?} to build the guests: {error}"))?;
    if !status.success() {
        return Err(format!(
            "building the guests ({}) failed with {status}; cargo's output above says why",
            manifest.display()
        ));
    }

    let release = target_dir.join(GUEST_TARGET).join("release");
    let members = workspace_members(&manifest)?;
    let mut modules = Vec::with_capacity(members.len());
    for member in members {
        // Cargo names a cdylib after the crate, with `-` written as `_`.
        let module = release.join(format!("{}.wasm", member.replace('-', "_")));
        if !module.is_file() {
            return Err(format!(
                "cargo reported success but {} is missing; is `{member}` a cdylib?",
                module.display()
            ));
        }
        modules.push(module);
    }
    Ok(modules)
}

/// The `members` of the samples workspace, read from its manifest. Member folders are
/// named after their crates (checked when the module is looked up).
fn workspace_members(manifest: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|error| format!("cannot read {}: {error}", manifest.display()))?;
    let start = text
        .find("members")
        .and_then(|at| text[at..].find('[').map(|open| at + open + 1))
        .ok_or_else(|| format!("{} has no `members = [...]` list", manifest.display()))?;
    let end = text[start..]
        .find(']')
        .map(|close| start + close)
        .ok_or_else(|| format!("{}: `members` list is not closed", manifest.display()))?;
    let members: Vec<String> = text[start..end]
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty() && !item.starts_with('#'))
        .collect();
    if members.is_empty() {
        return Err(format!("{} lists no members", manifest.display()));
    }
    Ok(members)
}
