//! Config errors through the real binary: each exits with status 64 before
//! binding any port, naming the key and the value. (The backend crate tests
//! its parser in detail; this checks the process contract.)

use e2e::Uploader;

fn assert_config_error(text: &str, must_mention: &[&str]) {
    let run = Uploader::run_expecting_exit(text);
    assert_eq!(
        run.status.code(),
        Some(64),
        "config {text:?} should exit 64; stderr:\n{}",
        run.stderr
    );
    for needle in must_mention {
        assert!(
            run.stderr.contains(needle),
            "stderr for {text:?} should mention {needle:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        !run.stdout.contains("listening"),
        "a bad config must fail before binding: {}",
        run.stdout
    );
}

#[test]
fn bad_configs_exit_64_naming_key_and_value() {
    assert_config_error(
        "[server]\nlisten = \"127.0.0.1:0\"\nwrokers = 3\n",
        &["wrokers"],
    );
    assert_config_error(
        "[server]\nread_timeout = \"ten seconds\"\n",
        &["read_timeout", "ten seconds"],
    );
    assert_config_error(
        "[server]\nlisten = \"localhost-ish:99999\"\n",
        &["listen", "localhost-ish:99999"],
    );
    assert_config_error("[server]\nworkers = 0\n", &["workers", "0"]);
    assert_config_error("[admin]\nlisten = \"127.0.0.1\"\n", &["admin", "127.0.0.1"]);
}
