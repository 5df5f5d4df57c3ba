//! The first steps of a new user: a fresh clone's `keys/`, and creating a store on purpose
//! with `wxauth store init`, under the same directory rule for the CLI as for `serve`.

use std::{collections::HashMap, os::unix::fs::PermissionsExt, path::Path};

use crate::helpers::{Server, base_vars, on_postgres, run_with_stdin, skip_on_postgres};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A keys directory as a fresh clone has it: the repository's two files, mode 0755.
fn cloned_keys_dir(root: &Path) -> std::path::PathBuf {
    let keys = root.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(keys.join("README.md"), "# keys/\n").unwrap();
    std::fs::write(keys.join(".gitignore"), "*\n!README.md\n!.gitignore\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    keys
}

fn dev_vars(root: &Path) -> HashMap<String, String> {
    [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_DATA_DIR", root.join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", root.join("keys").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_makes_a_fresh_clones_keys_directory_private_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let keys = cloned_keys_dir(dir.path());

    let server = Server::start(&dev_vars(dir.path()), &["serve", "--dev"]);
    assert_eq!(server.login("c@first").await.0, 200);
    let log = server.stop();

    assert!(!log.contains("chmod 700"), "a fresh clone was told to chmod its own keys directory:\n{log}");
    assert_eq!(mode(&keys), 0o700);
    assert!(keys.join("README.md").exists(), "the repository's files were touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_init_creates_the_store_that_accounts_add_then_uses() {
    let dir = tempfile::tempdir().unwrap();
    let wechat = crate::helpers::MockWechat::start().await;
    let vars = base_vars(dir.path(), &wechat);
    let keys = cloned_keys_dir(dir.path());
    let data = dir.path().join("data");

    // Before any store exists, the CLI names the one way to make one.
    if !on_postgres() {
        let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");
        assert!(!ok && stderr.contains("there is no store") && stderr.contains("wxauth store init"), "{stderr}");
        assert!(!data.exists(), "a refused command created the data directory");
    }

    let (ok, stdout, stderr) = run_with_stdin(&vars, &["store", "init"], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("store ready") && stdout.contains("created the session-key encryption key"), "{stdout}");
    assert_eq!(mode(&keys), 0o700, "the keys directory");
    assert_eq!(mode(&keys.join("session-keys.secret")) & 0o077, 0);
    if !on_postgres() {
        assert_eq!(mode(&data), 0o700, "the data directory");
    }

    let (ok, stdout, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");
    assert!(ok && stdout.contains("added account alice"), "{stdout}{stderr}");
    // Run again, it keeps what is there.
    let (ok, stdout, stderr) = run_with_stdin(&vars, &["store", "init"], "");
    assert!(ok && stdout.contains("kept the existing"), "{stdout}{stderr}");
    let (ok, stdout, _) = run_with_stdin(&vars, &["accounts", "list"], "");
    assert!(ok && stdout.contains("alice"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_made_with_mkdir_is_refused_by_the_cli_as_by_serve() {
    if skip_on_postgres("the data directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = crate::helpers::production(dir.path()).await;
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "mine").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let served = crate::helpers::refused_start(&vars, &["serve"]);
    let (ok, _, added) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");
    let (init_ok, _, init) = run_with_stdin(&vars, &["store", "init"], "");

    for (what, stderr) in [("serve", &served), ("accounts add", &added), ("store init", &init)] {
        assert!(stderr.contains("WXAUTH_DATA_DIR") && stderr.contains("chmod 700"), "{what}: {stderr}");
    }
    assert!(!ok && !init_ok);
    assert_eq!(mode(&data), 0o755, "a directory holding someone's files was changed");
}
