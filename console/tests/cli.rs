//! The `mindora-console` binary: `add-user` writes argon2id lines (password from stdin),
//! refuses bad input with a clear message; `serve` refuses a bad configuration before it
//! listens, naming the cause.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::Result;

fn console(args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mindora-console"))
        .args(args)
        .env_remove("MINDORA_CONSOLE_SECRET")
        .env_remove("MINDORA_CONSOLE_USERS_FILE")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        // A refusal (a bad role, say) can exit before reading stdin: a closed pipe is fine.
        match i.write_all(stdin.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    Ok(child.wait_with_output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn add_user_and_serve_refusals() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("users");
    let f = file.to_str().unwrap_or_default();
    let o = console(
        &["add-user", "--file", f, "--role", "operator", "ann"],
        "a long passphrase\n",
        &[],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = console(
        &["add-user", "--file", f, "--role", "viewer", "bob"],
        "another passphrase\n",
        &[],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&file)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("ann:operator:$argon2id$v=19$"),
        "{text}"
    );
    assert!(lines[1].starts_with("bob:viewer:$argon2id$"), "{text}");
    assert!(!text.contains("passphrase"));

    for (args, input, why) in [
        (
            vec!["--role", "admin", "eve"],
            "a long passphrase\n",
            "invalid value 'admin'",
        ),
        (
            vec!["--role", "viewer", "eve"],
            "short\n",
            "at least 8 characters",
        ),
        (vec!["--role", "viewer", "eve"], "", "no password on stdin"),
        (
            vec!["--role", "viewer", "e:ve"],
            "a long passphrase\n",
            "bad user name",
        ),
    ] {
        let mut a = vec!["add-user", "--file", f];
        a.extend(args);
        let o = console(&a, input, &[])?;
        assert!(!o.status.success());
        assert!(stderr(&o).contains(why), "{why}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_to_string(&file)?,
        text,
        "a refused add-user changed the file"
    );

    let serve = |envs: &[(&str, &str)]| console(&["serve", "--listen", "127.0.0.1:0"], "", envs);
    let o = serve(&[("MINDORA_CONSOLE_USERS_FILE", f)])?;
    assert!(
        stderr(&o).contains("MINDORA_CONSOLE_SECRET is not set"),
        "{}",
        stderr(&o)
    );
    let o = serve(&[
        ("MINDORA_CONSOLE_USERS_FILE", f),
        ("MINDORA_CONSOLE_SECRET", "too short"),
    ])?;
    assert!(
        stderr(&o).contains("it needs at least 32"),
        "{}",
        stderr(&o)
    );
    let missing = dir.path().join("nope");
    let o = serve(&[
        (
            "MINDORA_CONSOLE_USERS_FILE",
            missing.to_str().unwrap_or_default(),
        ),
        ("MINDORA_CONSOLE_SECRET", &"x".repeat(40)),
    ])?;
    assert!(
        stderr(&o).contains("users file") && stderr(&o).contains("nope"),
        "{}",
        stderr(&o)
    );
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "ann:operator:not-a-hash\n")?;
    let o = serve(&[
        (
            "MINDORA_CONSOLE_USERS_FILE",
            bad.to_str().unwrap_or_default(),
        ),
        ("MINDORA_CONSOLE_SECRET", &"x".repeat(40)),
    ])?;
    assert!(
        stderr(&o).contains("line 1") && stderr(&o).contains("bad hash"),
        "{}",
        stderr(&o)
    );
    Ok(())
}
