//! The GitHub workflows: valid for actionlint, and doing what the project promises.

use std::fs;
use std::process::Command;

use crate::support::*;

/// The release workflow, with the GitHub-hosted runner labels newer than the linter's list.
const RELEASE_LINT: [&str; 7] = [
    "--runner-label",
    "ubuntu-22.04-arm",
    "--runner-label",
    "macos-14",
    "--runner-label",
    "macos-13",
    ".github/workflows/release.yml",
];

#[test]
fn every_workflow_passes_actionlint() {
    if !runtimes(&[Runtime::Node]) {
        return;
    }
    let output = Command::new("node")
        .current_dir(repo())
        .args(["tests/tools/actionlint.mjs", ".github/workflows/ci.yml", ".github/workflows/nightly.yml"])
        .args(RELEASE_LINT)
        .output()
        .expect("node runs (scripts/test.sh installs the actionlint package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("0 problem(s) in 3 file(s)"), "{stdout}");
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    if !runtimes(&[Runtime::Node]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = pipeline(
        tmp.path(),
        "bad.yml",
        "name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n",
    );
    let output = Command::new("node").current_dir(repo()).arg("tests/tools/actionlint.mjs").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("property \"nope\" is not defined"));
}

#[test]
fn the_nightly_workflow_runs_the_pipeline_and_keeps_its_records() {
    if !runtimes(&[Runtime::Node]) {
        return;
    }
    let nightly = std::fs::read_to_string(repo().join(".github/workflows/nightly.yml")).unwrap();
    for needle in [
        "schedule:",
        "cron:",
        "workflow_dispatch:",
        "cargo build --release --locked",
        "dagrun generate --out nightly/data",
        "target/release/dagrun pipelines/sparkify.yaml",
        "--junit nightly/junit.xml --report nightly/report.html",
        "nightly/run.json",
        "actions/upload-artifact@v4",
        "aws-actions/configure-aws-credentials@v4",
        "id-token: write",
    ] {
        assert!(nightly.contains(needle), "nightly.yml lacks {needle}");
    }
    let ci = std::fs::read_to_string(repo().join(".github/workflows/ci.yml")).unwrap();
    assert!(ci.contains("pull_request:") && ci.contains("run: .ci/run"), "{ci}");
}

#[test]
fn the_release_workflow_builds_four_targets_packs_them_and_publishes_checksums() {
    let release = std::fs::read_to_string(repo().join(".github/workflows/release.yml")).unwrap();
    for needle in [
        "tags: [\"v*\"]",
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "aarch64-apple-darwin",
        "x86_64-apple-darwin",
        "cargo build --release --locked --target",
        "scripts/package.sh",
        "SHA256SUMS",
        "sha256sum --check SHA256SUMS",
        "scripts/install.sh dist/install.sh",
        "gh release create",
        "contents: write",
    ] {
        assert!(release.contains(needle), "release.yml lacks {needle}");
    }
}

/// This machine's target triple, as the release names it.
fn host_target() -> String {
    let os = match std::env::consts::OS {
        "macos" => "apple-darwin",
        _ => "unknown-linux-gnu",
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

fn version() -> String {
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let line = cargo.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.trim_start_matches("version = ").trim_matches('"').to_string()
}

/// The host build packed once by scripts/package.sh: (its dist folder, the tarball's name).
fn packed() -> &'static (std::path::PathBuf, String) {
    static PACKED: std::sync::OnceLock<(std::path::PathBuf, String)> = std::sync::OnceLock::new();
    PACKED.get_or_init(|| {
        let dist = std::env::temp_dir().join(format!("dagrun-dist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dist);
        let output = Command::new("scripts/package.sh")
            .current_dir(repo())
            .args([host_target().as_str(), env!("CARGO_BIN_EXE_dagrun"), dist.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (dist, format!("dagrun-{}-{}.tar.gz", version(), host_target()))
    })
}

#[test]
fn the_package_holds_the_binary_readme_docs_licenses_completions_and_man_page_with_its_checksum() {
    let (dist, tarball) = packed();
    let listing = Command::new("tar").arg("-tzf").arg(dist.join(tarball)).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let root = tarball.trim_end_matches(".tar.gz");
    let mut names: Vec<&str> = listing.lines().filter(|l| !l.ends_with('/')).collect();
    names.sort();
    let expected: Vec<String> = [
        "LICENSE-APACHE",
        "LICENSE-MIT",
        "README.md",
        "completions/_dagrun",
        "completions/_dagrun.ps1",
        "completions/dagrun.bash",
        "completions/dagrun.fish",
        "dagrun",
        "man/dagrun.1",
    ]
    .iter()
    .map(|n| format!("{root}/{n}"))
    .collect();
    // The documentation's chapters beside the README, which links to them.
    let mut expected = expected;
    for entry in fs::read_dir(repo().join("docs")).unwrap().flatten() {
        expected.push(format!("{root}/docs/{}", entry.file_name().to_string_lossy()));
    }
    expected.sort();
    assert_eq!(names, expected);
    // The checksum file is sha256sum's own format, and it holds.
    let check =
        Command::new("sha256sum").current_dir(dist).args(["--check", &format!("{tarball}.sha256")]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // `cargo binstall` finds the same file under the same folder.
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let url = "{ repo }/releases/download/v{ version }/dagrun-{ version }-{ target }.tar.gz";
    assert!(cargo.contains(&format!("pkg-url = \"{url}\"")), "binstall metadata");
    assert!(cargo.contains("bin-dir = \"dagrun-{ version }-{ target }/{ bin }{ binary-ext }\""));
    assert_eq!(
        url.replace("{ repo }/releases/download/v{ version }/", "")
            .replace("{ version }", &version())
            .replace("{ target }", &host_target()),
        *tarball
    );
}

/// A folder laid out like the GitHub releases page, holding the packed host build.
fn release_page(dir: &std::path::Path, corrupt: bool) -> String {
    let (dist, tarball) = packed();
    let tag = dir.join(format!("download/v{}", version()));
    let latest = dir.join("latest/download");
    let sums = std::fs::read_to_string(dist.join(format!("{tarball}.sha256"))).unwrap();
    let sums = if corrupt { format!("{}{}", "0".repeat(64), &sums[64..]) } else { sums };
    for folder in [&tag, &latest] {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::copy(dist.join(tarball), folder.join(tarball)).unwrap();
        std::fs::write(folder.join("SHA256SUMS"), &sums).unwrap();
    }
    format!("file://{}", dir.display())
}

#[test]
fn the_install_script_verifies_and_installs_a_release_and_refuses_a_checksum_that_does_not_match() {
    let tmp = tempfile::tempdir().unwrap();
    let releases = release_page(&tmp.path().join("releases"), false);
    for version in [None, Some(version())] {
        let prefix = tmp.path().join(format!("prefix-{}", version.is_some()));
        let mut install = Command::new("sh");
        install.arg(repo().join("scripts/install.sh")).args(["--from", &releases, "--to", prefix.to_str().unwrap()]);
        if let Some(v) = &version {
            install.args(["--version", v]);
        }
        let run = Run::from(install.output().unwrap()).expect(0);
        assert!(run.stdout.contains(&format!("installed dagrun {}", self::version())), "{}", run.stdout);
        let installed = Run::from(Command::new(prefix.join("bin/dagrun")).arg("--version").output().unwrap()).expect(0);
        assert!(installed.stdout.starts_with("dagrun "), "{}", installed.stdout);
        for file in
            ["share/man/man1/dagrun.1", "share/bash-completion/completions/dagrun", "share/zsh/site-functions/_dagrun"]
        {
            assert!(prefix.join(file).is_file(), "{file} installed");
        }
    }

    let bad = release_page(&tmp.path().join("bad-releases"), true);
    let prefix = tmp.path().join("prefix-bad");
    let run = Run::from(
        Command::new("sh")
            .arg(repo().join("scripts/install.sh"))
            .args(["--from", &bad, "--to", prefix.to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(run.stderr.contains("checksum mismatch") && run.stderr.contains("nothing was installed"), "{}", run.stderr);
    assert!(!prefix.join("bin/dagrun").exists());
}
