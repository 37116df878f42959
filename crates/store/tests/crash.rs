//! Crash consistency: every batch acknowledged before a SIGKILL is in the store after reopening.
//!
//! The test re-executes its own binary as a child (selected by an environment variable) that
//! commits numbered keys from many tasks and prints `acked N` after each acknowledgement. The
//! parent kills it with SIGKILL mid-stream, reopens the file and checks every acknowledged key.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use twinhub_store::{Batch, RedbStore, Store, Table};

const CHILD_DIR_VAR: &str = "TWINHUB_STORE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_commits_survive_sigkill";
const REQUIRED_ACKS: usize = 200;
const COMMITTERS: usize = 16;
/// The child stops by itself after this many commits, should the parent never kill it.
const CHILD_COMMIT_LIMIT: u64 = 100_000;
const SIGKILL: i32 = 9;

#[test]
fn acknowledged_commits_survive_sigkill() {
    match std::env::var_os(CHILD_DIR_VAR) {
        Some(dir) => run_child(Path::new(&dir)),
        None => run_parent(),
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("store.redb")
}

fn key(n: u64) -> Vec<u8> {
    format!("key-{n:08}").into_bytes()
}

fn value(n: u64) -> Vec<u8> {
    format!("value-{n}-").repeat(8).into_bytes()
}

fn run_child(dir: &Path) {
    let store = Arc::new(RedbStore::open(&store_path(dir)).expect("child: open store"));
    let next = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("child: runtime");
    runtime.block_on(async {
        let committers: Vec<_> = (0..COMMITTERS)
            .map(|_| {
                let store = Arc::clone(&store);
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= CHILD_COMMIT_LIMIT {
                            return;
                        }
                        // Two tables per batch, so a torn batch would also show up.
                        let mut batch = Batch::new();
                        batch.put(Table::Registry, key(n), value(n)).put(
                            Table::Sessions,
                            key(n),
                            value(n),
                        );
                        assert_eq!(store.commit(batch).await, Ok(()), "child: commit {n}");
                        let mut stdout = std::io::stdout().lock();
                        if writeln!(stdout, "acked {n}")
                            .and_then(|()| stdout.flush())
                            .is_err()
                        {
                            // The parent stopped listening; nothing left to prove.
                            return;
                        }
                    }
                })
            })
            .collect();
        for committer in committers {
            committer.await.expect("child: committer task");
        }
    });
}

/// The number in an `acked N` line; libtest may print its own text before it on the same line.
fn parse_ack(line: &str) -> Option<u64> {
    let (_, number) = line.rsplit_once("acked ")?;
    number.trim_end().parse().ok()
}

fn run_parent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("own test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut output = BufReader::new(child.stdout.take().expect("child stdout"));

    let mut acked = BTreeSet::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        let read = output.read_line(&mut line).expect("read child stdout");
        // Only a complete line is a complete acknowledgement.
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        if let Some(n) = parse_ack(&line) {
            acked.insert(n);
        }
        if !killed && acked.len() >= REQUIRED_ACKS {
            // Keep reading afterwards: acks already in the pipe were given before the kill.
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait for child");
    assert!(
        killed,
        "child ended ({status}) after only {} acknowledgements",
        acked.len()
    );
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "child was not killed: {status}"
    );

    let store = RedbStore::open(&store_path(dir.path())).expect("reopen after SIGKILL");
    for &n in &acked {
        for table in [Table::Registry, Table::Sessions] {
            assert_eq!(
                store.get(table, &key(n)),
                Ok(Some(value(n))),
                "acknowledged key {n} is missing from {table:?}"
            );
        }
    }
}

#[test]
fn ack_lines_are_parsed_even_after_libtest_text() {
    assert_eq!(parse_ack("acked 17\n"), Some(17));
    assert_eq!(
        parse_ack("test acknowledged_commits_survive_sigkill ... acked 3\n"),
        Some(3)
    );
    assert_eq!(parse_ack("running 1 test\n"), None);
}
