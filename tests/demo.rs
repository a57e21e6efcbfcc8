//! `scripts/demo`, the README's first command, run end to end: the seed
//! tutorial with shell tools through two real mounts.

use std::process::Command;

#[test]
fn the_demo_replays_the_seed_and_cleans_up() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo"))
        .env("ZARRFS_BIN", env!("CARGO_BIN_EXE_zarrfs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("  A [M] meta/root.group.json"), "{stdout}");
    assert!(
        stdout.contains("->main, including ['meta/root/toy_data.group.json']"),
        "{stdout}"
    );
    assert!(
        stderr.contains("write error: Device or resource busy"),
        "{stderr}"
    );
    // Example 3: B after committing, A before and after checking out.
    let b_after = "[[10, 10, 1],\n [1, 1, 1],\n [1, 1, 3]]";
    let a_before = "[[10, 10, 1],\n [1, 1, 1],\n [1, 1, 1]]";
    let b = stdout.find(b_after).expect("B sees both writes");
    let a = stdout[b..]
        .find(a_before)
        .expect("A does not see B's 3 yet")
        + b;
    assert!(
        stdout[a..].contains(b_after),
        "A sees B's 3 after checking out"
    );
    assert!(stdout.contains("Demo complete."));
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains("zarrfs-demo"),
        "the demo left a mount behind"
    );
}
