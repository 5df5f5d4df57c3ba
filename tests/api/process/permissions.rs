//! Files of the real binary are private to its user, and a data directory keeps the mode (dev or
//! production) it was created in.

use std::{collections::HashMap, path::Path};

use crate::helpers::{Server, on_postgres, production, run, skip_on_postgres, store_vars};

/// Permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_the_server_writes_is_private_to_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    assert_eq!(server.login("c@private").await.0, 200);
    server.stop();

    // PostgreSQL keeps the data elsewhere, its files the database server's business.
    let private_dirs: &[&str] = if on_postgres() { &["keys"] } else { &["data", "keys"] };
    for private_dir in private_dirs {
        assert_eq!(mode_of(&dir.path().join(private_dir)), 0o700, "{private_dir}");
    }
    let mut files = Vec::new();
    for top in private_dirs {
        let mut stack = vec![dir.path().join(top)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                files.push(path);
            }
        }
    }
    assert!(on_postgres() || files.iter().any(|f| f.ends_with("db")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(wxauth::store::sealed::KEY_FILE)), "{files:?}");
    for file in files {
        assert_eq!(mode_of(&file) & 0o077, 0, "{} is open to others", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_data_and_keys_directories_open_to_others_and_dev_mode_warns() {
    use std::os::unix::fs::PermissionsExt;
    let settings: &[(&str, &str)] = if on_postgres() {
        &[("WXAUTH_KEYS_DIR", "keys")]
    } else {
        &[("WXAUTH_DATA_DIR", "data"), ("WXAUTH_KEYS_DIR", "keys")]
    };
    for &(setting, open) in settings {
        let dir = tempfile::tempdir().unwrap();
        let (_wechat, vars) = production(dir.path()).await;
        std::fs::create_dir_all(dir.path().join(open)).unwrap();
        std::fs::set_permissions(dir.path().join(open), std::fs::Permissions::from_mode(0o755)).unwrap();

        let out = run(&vars, &["serve"]);

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting} open to others was accepted");
        assert!(stderr.contains(setting) && stderr.contains("chmod 700") && stderr.contains("0755"), "{stderr}");
    }
    if skip_on_postgres("the data directory") {
        return;
    }

    // Dev mode makes a directory of only its own files private itself (tests/api/setup.rs);
    // one that holds something else it only warns about.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/notes.txt"), "mine").unwrap();
    std::fs::set_permissions(dir.path().join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let vars: HashMap<String, String> = [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_DATA_DIR", dir.path().join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", dir.path().join("keys").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let server = Server::start(&vars, &["serve", "--dev"]);
    let log = server.stop();
    assert!(log.contains("WXAUTH_DATA_DIR") && log.contains("chmod 700"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_keeps_the_mode_it_was_created_in() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, prod) = production(dir.path()).await;
    let server = Server::start(&prod, &["serve"]);
    assert_eq!(server.login("c@mode").await.0, 200);
    server.stop();

    // Dev mode on production's users (with keys of its own).
    let mut dev: HashMap<String, String> = prod.clone();
    dev.remove("WXAUTH_WECHAT_SECRET");
    dev.remove("WXAUTH_ISSUER");
    dev.insert("WXAUTH_KEYS_DIR".into(), dir.path().join("dev-keys").display().to_string());
    let out = run(&dev, &["serve", "--dev"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("created in production mode"), "{stderr}");

    // And production on a store dev mode created.
    let dev_store: Vec<(String, String)> = match on_postgres() {
        true => store_vars(),
        false => vec![("WXAUTH_DATA_DIR".into(), dir.path().join("dev-data").display().to_string())],
    };
    dev.extend(dev_store.clone());
    let server = Server::start(&dev, &["serve", "--dev"]);
    server.stop();
    let mut prod_on_dev = prod.clone();
    prod_on_dev.extend(dev_store);
    let out = run(&prod_on_dev, &["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("created in dev mode"), "{stderr}");
}
